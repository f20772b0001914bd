"""Pretrained backbone weights as the official model sees them: patch 14 -> 16 and the position grid resized.

The official conversion resizes the 14x14 patch kernel to 16x16 and the 37x37 position grid to the
crop's grid (32x32 for 512 crops) with plain bicubic interpolation, ``align_corners=False``, no
antialiasing and no rescaling of magnitudes. timm's own load-time resampling differs (pseudo-inverse
kernel resize, antialiased grid), so weights are loaded through these functions instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rein_cli.config import rein_home
from rein_cli.errors import ReinError
from rein_cli.io import atomic_path, write_json

log = logging.getLogger(__name__)


def resize_patch_embed(weight: Tensor, patch_size: int) -> Tensor:
    """(C, 3, p, p) kernel -> (C, 3, patch_size, patch_size), bicubic, no rescale."""
    if weight.shape[-1] == patch_size and weight.shape[-2] == patch_size:
        return weight
    return F.interpolate(weight.float(), size=(patch_size, patch_size), mode="bicubic", align_corners=False)


def resize_pos_embed(pos_embed: Tensor, grid: tuple[int, int], num_prefix: int, mode: str = "bicubic") -> Tensor:
    """(1, P + g*g, C) -> (1, P + H*W, C): the square grid resized (``align_corners=False``), P prefixes kept."""
    prefix, patches = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:]
    side = math.isqrt(patches.shape[1])
    if side * side != patches.shape[1]:
        raise ReinError(f"position embedding of {patches.shape[1]} patches is not a square grid")
    if (side, side) == tuple(grid):
        return pos_embed
    C = patches.shape[-1]
    patches = patches.reshape(1, side, side, C).permute(0, 3, 1, 2)  # (1, C, g, g)
    patches = F.interpolate(patches.float(), size=grid, mode=mode, align_corners=False)
    return torch.cat([prefix, patches.permute(0, 2, 3, 1).reshape(1, -1, C)], dim=1)  # (1, P + H*W, C)


def resize_rel_pos(rel_pos: Tensor, length: int) -> Tensor:
    """SAM's relative position table (L, C) -> (length, C), linearly, as SAM itself does at run time."""
    if rel_pos.shape[0] == length:
        return rel_pos
    return F.interpolate(rel_pos.T[None].float(), size=length, mode="linear")[0].T


# Meta's DINOv2 files name the packed SwiGLU of ViT-g ``mlp.w12`` / ``mlp.w3``; timm names them ``fc1`` / ``fc2``.
META_NAMES = ((r"\.mlp\.w12\.", ".mlp.fc1."), (r"\.mlp\.w3\.", ".mlp.fc2."))


def timm_name(key: str) -> str:
    """A backbone weight's name as timm's model has it (Meta's DINOv2 names translated)."""
    for pattern, replacement in META_NAMES:
        key = re.sub(pattern, replacement, key)
    return key


def adapt_state_dict(state: dict[str, Tensor], model: nn.Module, pos_mode: str = "bicubic") -> dict[str, Tensor]:
    """A timm state dict resized to ``model``'s patch size, position grid (and SAM's relative position
    tables); keys the model lacks (classifier heads) dropped."""
    own = model.state_dict()
    state = {timm_name(k): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in own}
    if "patch_embed.proj.weight" in state:
        state["patch_embed.proj.weight"] = resize_patch_embed(
            state["patch_embed.proj.weight"], own["patch_embed.proj.weight"].shape[-1]
        )
    if "pos_embed" in state and state["pos_embed"].shape != own["pos_embed"].shape:
        pos, target = state["pos_embed"], own["pos_embed"]
        if pos.dim() == 4:  # SAM: (1, H, W, C)
            grid = F.interpolate(
                pos.permute(0, 3, 1, 2).float(), size=target.shape[1:3], mode=pos_mode, align_corners=False
            )
            state["pos_embed"] = grid.permute(0, 2, 3, 1)
        else:
            grid = tuple(model.patch_embed.grid_size)
            state["pos_embed"] = resize_pos_embed(pos, grid, target.shape[1] - grid[0] * grid[1], pos_mode)
    for key in [k for k in state if k.endswith(("rel_pos_h", "rel_pos_w"))]:
        state[key] = resize_rel_pos(state[key], own[key].shape[0])
    return state


PICKLE_SUFFIXES = (".bin", ".pth", ".pt")  # PyTorch pickles: pytorch_model.bin of older timm Hub repos


def read_weights(path: Path | str) -> dict[str, Tensor]:
    """A backbone weights file as a state dict: safetensors, or a PyTorch pickle (by its suffix, `PICKLE_SUFFIXES`)
    loaded with ``weights_only=True`` as timm loads ``pytorch_model.bin``: tensors only, no code run."""
    path = Path(path)
    redo = f"delete {path.resolve()} and rerun to download it again"  # a Hub cache link: its blob, not the link
    if path.suffix not in PICKLE_SUFFIXES:
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for corrupt files
            raise ReinError(f"cannot read backbone weights {path}: {err}; {redo}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling error, a truncated zip, not a PyTorch file at all
        raise ReinError(
            f"cannot read backbone weights {path}: not a PyTorch file of tensors that loads safely "
            f"({_unsafe_reason(err)}); {redo}"
        ) from err
    for key in ("state_dict", "model"):  # a training checkpoint around the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ReinError(f"backbone weights {path} are not a dictionary of tensors; {redo}")
    return state


def _unsafe_reason(err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words: the code it would need, or the error's
    first line (never torch's advice on loading it anyway)."""
    text = str(err)
    if found := re.search(r"Unsupported global: GLOBAL ([\w.]+)", text):
        return f"it refers to {found[1]}, code that a weights-only load does not run"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return first if first and "weights_only" not in first and "trust" not in first else type(err).__name__


def timm_layout(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """``state`` with timm's names. A file that has none of ``model``'s keys but is in a layout timm converts when
    it loads a ViT (OpenAI CLIP's ``visual.*``, as the ``pytorch_model.bin`` of timm's CLIP repos) is renamed by
    timm's own filter, at the file's native patch size and grid so that nothing is resized there (the official
    resizing is `adapt_state_dict`'s)."""
    own = set(model.state_dict())
    if own & {timm_name(k) for k in state} or not any(k.endswith("visual.class_embedding") for k in state):
        return state
    from timm.models.vision_transformer import checkpoint_filter_fn

    native = _native_geometry(model, state)
    return checkpoint_filter_fn(state, native)


def _native_geometry(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """A shape-only (meta) timm model of ``model``'s architecture at the patch size and grid of ``state``."""
    import timm

    conv = next(v for k, v in state.items() if k.endswith("visual.conv1.weight"))
    positions = next(v for k, v in state.items() if k.endswith("visual.positional_embedding"))
    patch, side = conv.shape[-1], math.isqrt(positions.shape[-2] - 1)
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if arch is None:
        raise ReinError("weights in OpenAI CLIP's layout need a timm model to be converted for")
    with torch.device("meta"):
        return timm.create_model(arch, pretrained=False, num_classes=0, img_size=side * patch, patch_size=patch)


CONVERSION_VERSION = 1  # bump when the conversion changes: converted files of other versions are not reused


def source_hash(path: Path | str) -> str:
    """SHA-256 of a weights file. A Hub cache blob is named by it already; other files are hashed once and the
    result kept in a small index beside the converted weights (keyed by path, size and modification time)."""
    path = Path(path)
    blob = path.resolve().name
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        return blob
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index_path = rein_home() / "weights" / "sources.json"
    try:
        index = json.loads(index_path.read_text())
    except (OSError, ValueError):
        index = {}
    if key not in index:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
        index[key] = digest.hexdigest()
        with contextlib.suppress(ReinError):  # a read-only REIN_HOME: hash again next time
            write_json(index_path, index)
    return index[key]


def converted_path(backbone: str, source: Path | str, crop_size: int) -> Path:
    """Where the converted weights of ``source`` for ``crop_size`` are kept: $REIN_HOME/weights, keyed by the
    source's hash, the crop and the conversion version."""
    name = f"{source_hash(source)[:16]}-crop{crop_size}-v{CONVERSION_VERSION}.safetensors"
    return rein_home() / "weights" / backbone / name


def load_backbone_weights(model: nn.Module, path: Path | str, spec=None, *, cache: Path | None = None) -> None:
    """Load a timm-format safetensors file into ``model`` with the official resizing; every weight must be filled.

    With ``cache`` (see `converted_path`), a conversion that resized anything is written there once and later
    loads read it instead of converting again."""
    if cache is not None and Path(cache).is_file():
        path = cache
    source = timm_layout(read_weights(path), model)
    state = adapt_state_dict(source, model, spec.pos_mode if spec is not None else "bicubic")
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise ReinError(
            f"backbone weights {path} lack {len(missing)} tensors (e.g. {', '.join(missing[:3])}); "
            "is it the right backbone?"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ReinError(f"backbone weights {path} do not fit: {err}") from err
    if cache is not None and path != cache:
        _keep(state, source, cache)


def convert_backbone_file(backbone: str, source: Path | str, crop_size: int, **timm_kwargs: Any) -> Path:
    """The official conversion of a backbone weights file for ``crop_size``, on disk: written once to
    `converted_path` and reused; ``source`` itself when nothing needs resizing. ``timm_kwargs`` as in
    ``model.backbone_kwargs``."""
    from rein_cli.models.backbone import backbone_spec, create_timm_model

    cache = converted_path(backbone, source, crop_size)
    if cache.is_file():
        return cache
    with torch.device("meta"):  # only the shapes are needed
        model = create_timm_model(backbone, crop_size, **timm_kwargs)
    state = timm_layout(read_weights(source), model)
    adapted = adapt_state_dict(state, model, backbone_spec(backbone).pos_mode)
    missing = sorted(set(model.state_dict()) - set(adapted))
    if missing:
        raise ReinError(f"backbone weights {source} lack {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    return cache if _keep(adapted, state, cache) else Path(source)


def _keep(state: dict[str, Tensor], source: dict[str, Tensor], cache: Path) -> bool:
    """Write a conversion that resized anything to ``cache``; True when it did."""
    from safetensors.torch import save_file

    if not any(k not in source or state[k].shape != source[k].shape for k in state):  # resized or renamed
        return False
    try:
        with atomic_path(Path(cache)) as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    except (ReinError, OSError) as err:  # a read-only REIN_HOME only costs the conversion next time
        log.warning("could not keep the converted weights in %s: %s", cache, err)
        return False
    return True
