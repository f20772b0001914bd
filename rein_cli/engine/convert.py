"""Official checkpoints -> ours: Rein release files (mmseg naming) and Meta's original DINOv2 weights.

The official state dict names a parameter by its mmseg/mmdet path (``decode_head.transformer_decoder.
layers.0.norms.1.weight``); ours by our modules (``head.transformer_decoder.layers.0.norm2.weight``).
`to_official` and `from_official` translate one name with two explicit rule lists, so a checkpoint
converts whatever the naming of our modules, and any key left over is reported, never dropped silently.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rein_cli.config import ModelConfig, ReinConfig, config_from_dict, to_dict
from rein_cli.engine.checkpoint import CONFIG_FILE, save_checkpoint
from rein_cli.errors import ReinError
from rein_cli.io import atomic_path, check_folder
from rein_cli.models.backbone import IMAGENET_MEAN, IMAGENET_STD, PATCH_SIZE, backbone_spec, create_timm_model
from rein_cli.models.methods import METHODS
from rein_cli.models.segmentor import Segmentor, build_segmentor
from rein_cli.models.weights import META_NAMES, resize_patch_embed, resize_pos_embed

# Every official model normalises its inputs with the ImageNet mean and std (in 0..1 units), whatever the backbone.
OFFICIAL_MEAN, OFFICIAL_STD = IMAGENET_MEAN, IMAGENET_STD

# (ours, official) regular expressions, applied in order. Inverse rules are listed explicitly below.
_TO_OFFICIAL = [
    (r"^head\.", "decode_head."),
    (r"^backbone\.vit\.", "backbone."),
    (r"\.ffn\.fc1\.", ".ffn.layers.0.0."),
    (r"\.ffn\.fc2\.", ".ffn.layers.1."),
    (r"(encoder\.layers\.\d+)\.norm([12])\.", lambda m: f"{m[1]}.norms.{int(m[2]) - 1}."),
    (r"(transformer_decoder\.layers\.\d+)\.norm([123])\.", lambda m: f"{m[1]}.norms.{int(m[2]) - 1}."),
    (r"(transformer_decoder\.layers\.\d+\.(?:self|cross)_attn)\.", r"\1.attn."),
    (r"pixel_decoder\.lateral_conv\.", "pixel_decoder.lateral_convs.0."),
    (r"pixel_decoder\.output_conv\.", "pixel_decoder.output_convs.0."),
]
_FROM_OFFICIAL = [
    (r"^decode_head\.", "head."),
    (r"^backbone\.(?!reins\.)", "backbone.vit."),
    (r"\.ffn\.layers\.0\.0\.", ".ffn.fc1."),
    (r"\.ffn\.layers\.1\.", ".ffn.fc2."),
    (r"(encoder\.layers\.\d+)\.norms\.([01])\.", lambda m: f"{m[1]}.norm{int(m[2]) + 1}."),
    (r"(transformer_decoder\.layers\.\d+)\.norms\.([012])\.", lambda m: f"{m[1]}.norm{int(m[2]) + 1}."),
    (r"(transformer_decoder\.layers\.\d+\.(?:self|cross)_attn)\.attn\.", r"\1."),
    (r"pixel_decoder\.lateral_convs\.0\.", "pixel_decoder.lateral_conv."),
    (r"pixel_decoder\.output_convs\.0\.", "pixel_decoder.output_conv."),
    (r"^backbone\.vit\.register_tokens$", "backbone.vit.reg_token"),  # Meta's name for DINOv2 registers
    *META_NAMES,  # Meta's names for ViT-g's packed SwiGLU
]
# Official backbone tensors that timm's model does not have and the forward never uses.
UNUSED_OFFICIAL = {"backbone.mask_token"}


def _apply(rules, key: str) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def to_official(key: str) -> str:
    return _apply(_TO_OFFICIAL, key)


def from_official(key: str) -> str:
    return _apply(_FROM_OFFICIAL, key)


def load_state_dict_file(path: Path | str) -> dict[str, Tensor]:
    """A state dict from ``.pth``/``.pt`` (``weights_only=True``: nothing arbitrary is unpickled) or
    ``.safetensors``; a ``state_dict`` or ``model`` wrapper is unwrapped and a ``module.`` prefix removed."""
    path = Path(path)
    if path.is_dir():
        raise ReinError(f"{path} is a folder; give the checkpoint file itself (e.g. iter_40000_published.pth)")
    if not path.is_file():
        raise ReinError(f"checkpoint not found: {path}; check the path")
    if path.stat().st_size == 0:
        raise ReinError(f"{path} is empty (0 bytes): an interrupted download? fetch it again")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            data = load_file(str(path))
        except Exception as err:
            raise ReinError(f"cannot read {path}: {err}") from err
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise ReinError(
                f"{path} holds objects that only full unpickling could load, and rein does not unpickle arbitrary "
                "code; if you trust the file, re-save its tensors: python -c \"import torch; c = torch.load('IN', "
                "weights_only=False); torch.save(c.get('state_dict', c), 'OUT')\""
            ) from err
        except (RuntimeError, EOFError, OSError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ReinError(
                f"cannot read {path} ({reason}): not a PyTorch checkpoint, or a truncated one; fetch it again"
            ) from err
    state = _state_dict(data)
    if state is None:
        raise ReinError(f"{path} is not a state dict (a mapping of names to tensors, possibly under 'state_dict')")
    return state


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6 (a zip archive)
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8"  # the older format: pickle protocol 2, then torch's magic number


class NotACheckpoint(ReinError):
    """A downloaded file that holds no state dict of tensors; ``what`` says what it is instead (``an HTML page``)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def read_downloaded(path: Path | str) -> dict[str, Tensor]:
    """The state dict in a file rein downloaded, loaded with ``weights_only=True`` (memory-mapped in torch's zip
    format); anything else raises `NotACheckpoint` saying what the file is (an HTML page, not a PyTorch file, a
    truncated one, one with pickled objects). A download is not trusted: nothing here offers to unpickle more."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise NotACheckpoint("an empty file")
    zipped = head.startswith(ZIP_MAGIC)
    if not zipped and not head.startswith(LEGACY_MAGIC):
        raise NotACheckpoint(_not_pytorch(head))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=zipped)
    except pickle.UnpicklingError as err:
        raise NotACheckpoint("a PyTorch file holding objects other than tensors, which rein does not load") from err
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as err:
        reason = str(err).strip().split(". ")[0].splitlines()[0] if str(err).strip() else type(err).__name__
        raise NotACheckpoint(f"a truncated or damaged PyTorch file ({reason})") from err
    state = _state_dict(data)
    if state is None:
        raise NotACheckpoint(f"a PyTorch file that is not a state dict (it holds a {type(data).__name__})")
    return state


def _not_pytorch(head: bytes) -> str:
    """What a file that is neither of torch's formats looks like, from its first bytes."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:15].lower().startswith((b"<!doctype html", b"<html")) or b"<html" in text[:512].lower():
        return "an HTML page"
    try:
        words = " ".join(text.decode().split())
    except UnicodeDecodeError:
        words = ""
    if words and words.isprintable():
        return f"text that is not a PyTorch file (it begins {words[:40]!r})"
    return "a file that is not a PyTorch file"


def _state_dict(data: Any) -> dict[str, Tensor] | None:
    """``data`` as a state dict (a ``state_dict`` or ``model`` wrapper unwrapped, a ``module.`` prefix removed), or
    None when it is not a non-empty mapping of names to tensors."""
    if isinstance(data, dict):
        for wrapper in ("state_dict", "model"):
            if isinstance(data.get(wrapper), dict):
                data = data[wrapper]
                break
    if (
        not isinstance(data, dict)
        or not data
        or not all(isinstance(k, str) and isinstance(v, Tensor) for k, v in data.items())
    ):
        return None
    return {k.removeprefix("module."): v for k, v in data.items()}


def official_model_args(state: dict[str, Tensor]) -> dict:
    """What the official file tells about the model: classes, Rein tokens, whether the backbone is included."""
    if "decode_head.cls_embed.weight" not in state:
        raise ReinError("not an official Rein checkpoint: no decode_head.cls_embed.weight (is it a backbone file?)")
    args = {"num_classes": state["decode_head.cls_embed.weight"].shape[0] - 1}
    tokens = {
        m[1]: v
        for k, v in state.items()
        if (m := re.fullmatch(r"backbone\.reins\.(?:\d+\.)?(learnable_tokens(?:_a)?)", k))
    }
    if state["decode_head.cls_embed.weight"].dim() != 2 or args["num_classes"] < 1:
        raise ReinError("decode_head.cls_embed.weight must be (classes + 1, 256); the file is not a Rein checkpoint")
    if "learnable_tokens_a" in tokens:  # per layer (L, T, r); ConvNeXt has one set per stage, backbone.reins.<stage>.*
        shape = tokens["learnable_tokens_a"].shape
        if len(shape) != 3:
            raise ReinError(
                f"backbone.reins...learnable_tokens_a has shape {tuple(shape)}, expected (layers, tokens, rank)"
            )
        _, args["token_length"], args["rank"] = shape
    elif "learnable_tokens" in tokens:
        shape = tokens["learnable_tokens"].shape
        if len(shape) != 3:
            raise ReinError(
                f"backbone.reins...learnable_tokens has shape {tuple(shape)}, expected (layers, tokens, dim)"
            )
        args["token_length"], args["rank"] = shape[1], 0
    else:
        raise ReinError("not an official Rein checkpoint: no backbone.reins tokens")
    args["with_backbone"] = any(k.startswith("backbone.") and not k.startswith("backbone.reins.") for k in state)
    return args


def load_official_into(model: torch.nn.Module, state: dict[str, Tensor], *, with_backbone: bool) -> None:
    """Copy an official state dict into ``model``; every official key must be used and every trained
    parameter of ours (and, ``with_backbone``, every backbone weight) filled, with matching shapes."""
    own = model.state_dict()
    mapped, leftovers, wrong = {}, [], []
    for key, value in state.items():
        if key in UNUSED_OFFICIAL:
            continue
        ours = from_official(key)
        if ours not in own:
            leftovers.append(key)
        elif own[ours].shape != value.shape:
            wrong.append(f"{key} {tuple(value.shape)} (expected {tuple(own[ours].shape)})")
        else:
            mapped[ours] = value
    needed = {n for n, p in model.named_parameters() if p.requires_grad}
    if with_backbone:
        needed |= {k for k in own if k.startswith("backbone.vit.")}
    missing = sorted(needed - set(mapped))
    problems = []
    if leftovers:
        problems.append(f"{len(leftovers)} official keys have no place in the model: {', '.join(leftovers[:6])}")
    if wrong:
        problems.append(f"{len(wrong)} tensors have the wrong shape for this backbone: {', '.join(wrong[:4])}")
    if missing:
        problems.append(
            f"{len(missing)} parameters are not in the file: {', '.join(to_official(k) for k in missing[:6])}"
        )
    if problems:
        raise ReinError("the checkpoint does not match the named backbone: " + "; ".join(problems))
    model.load_state_dict(mapped, strict=False)


def convert_official_checkpoint(
    state: dict[str, Tensor],
    backbone: str,
    out: Path | str,
    *,
    crop_size: int = 512,
    source: str = "",
    settings: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """An official Rein release state dict -> a rein checkpoint directory at ``out`` (see `official_segmentor`)."""
    model = official_segmentor(state, backbone, crop_size=crop_size, settings=settings, provenance=provenance)
    return save_checkpoint(model, Path(out), info={"converted_from": source})


def official_segmentor(
    state: dict[str, Tensor],
    backbone: str,
    *,
    crop_size: int = 512,
    settings: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Segmentor:
    """An official Rein release state dict as our model, every key used and every trained parameter filled.

    The classes and the Rein tokens come from the file; ``settings`` are other `ModelConfig` fields that are not
    in the weights (e.g. ``feature_indices``); inputs are normalised as every official model normalises them
    (ImageNet mean and std); ``provenance`` (e.g. the release's URL and SHA-256) goes into ``config.json``."""
    args = official_model_args(state)
    rein = ReinConfig(token_length=args["token_length"], rank=args["rank"])
    # With the backbone in the file it is filled from the file (and saved); else it comes from the Hub when loaded.
    cfg = ModelConfig(
        backbone=backbone,
        pretrained=not args["with_backbone"],
        head="mask2former",
        num_classes=args["num_classes"],
        crop_size=crop_size,
        rein=rein,
    )
    cfg = config_from_dict({"model": {**to_dict(cfg), **(settings or {})}}).model  # checked like any config
    if not METHODS[cfg.method].converts_official:
        targets = " or ".join(name for name, method in METHODS.items() if method.converts_official)
        raise ReinError(
            f"an official Rein checkpoint holds Rein and head weights; it converts to method {targets}, not "
            f"{cfg.method} (train the other methods with `rein train --method ...`)"
        )
    model = build_segmentor(cfg, load_backbone=False, mean=OFFICIAL_MEAN, std=OFFICIAL_STD, provenance=provenance)
    load_official_into(model, state, with_backbone=args["with_backbone"])
    return model


def convert_dinov2_release(
    state: dict[str, Tensor], backbone: str, out: Path | str, *, crop_size: int = 512, source: str = ""
) -> Path:
    """Meta's ``dinov2_vit*14_pretrain.pth`` -> safetensors with the patch-16 kernel and the crop's position grid,
    exactly as the official converter computes them (plain bicubic, ``align_corners=False``); Meta's key names."""
    from safetensors.torch import save_file

    if backbone not in ("dinov2-s", "dinov2-b", "dinov2-l", "dinov2-g"):
        raise ReinError(f"original-release conversion is for dinov2-s|b|l|g (Meta's *_pretrain.pth); not {backbone}")
    if crop_size % PATCH_SIZE:
        raise ReinError(f"--crop {crop_size} must be a multiple of {PATCH_SIZE} (512 or 1024 in the paper)")
    if "pos_embed" not in state or "patch_embed.proj.weight" not in state:
        raise ReinError(f"{source} is neither an official Rein checkpoint nor a DINOv2 release file")
    grid = (crop_size // PATCH_SIZE, crop_size // PATCH_SIZE)
    num_prefix = 1  # Meta's files keep one class-token position; registers have none
    converted = dict(state)
    converted["patch_embed.proj.weight"] = resize_patch_embed(state["patch_embed.proj.weight"].float(), PATCH_SIZE)
    converted["pos_embed"] = resize_pos_embed(state["pos_embed"].float(), grid, num_prefix)
    with torch.device("meta"):
        model = create_timm_model(backbone, crop_size)
    own = model.state_dict()
    renamed = {from_official("backbone." + k).removeprefix("backbone.vit."): k for k in converted}
    leftovers = sorted(v for k, v in renamed.items() if k not in own and "backbone." + v not in UNUSED_OFFICIAL)
    missing = sorted(set(own) - set(renamed))
    wrong = sorted(v for k, v in renamed.items() if k in own and own[k].shape != converted[v].shape)
    if leftovers or missing or wrong:
        raise ReinError(
            f"{source} does not match {backbone} ({backbone_spec(backbone).arch}): unexpected {leftovers[:4]}, "
            f"missing {missing[:4]}, wrong shapes {wrong[:4]}"
        )
    out = Path(out)
    if out.suffix != ".safetensors":
        out = out / f"{backbone}_{crop_size}.safetensors"
    with atomic_path(out) as tmp:
        save_file({k: v.contiguous() for k, v in converted.items()}, str(tmp), metadata={"converted_from": source})
    return out


def is_official_checkpoint(state: dict[str, Tensor]) -> bool:
    """An official Rein release file (Rein and head weights), as opposed to backbone weights."""
    return any(k.startswith(("decode_head.", "backbone.reins.")) for k in state)


def convert(src: Path | str, backbone: str, out: Path | str, *, crop_size: int = 512, overwrite: bool = False) -> Path:
    """Either kind of official file, told apart by its keys. An existing checkpoint or weights file at ``out`` is
    replaced only with ``overwrite``."""
    backbone_spec(backbone)  # an unknown name fails before the file is read
    out = Path(out)
    check_folder(out.parent if out.suffix == ".safetensors" else out)  # a weights file is named, a checkpoint not
    existing = out if out.suffix == ".safetensors" and out.exists() else out / CONFIG_FILE
    if existing.exists() and not overwrite:
        raise ReinError(
            f"{out} already holds a converted model; add --overwrite to replace it, or choose another --out"
        )
    state = load_state_dict_file(src)
    kind = convert_official_checkpoint if is_official_checkpoint(state) else convert_dinov2_release
    return kind(state, backbone, out, crop_size=crop_size, source=Path(src).name)
