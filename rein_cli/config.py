"""Typed run configuration. Precedence: dataclass defaults < YAML recipe < ``--set key=value`` < explicit flags.

The defaults are the paper's model and schedule (DINOv2-L with Rein and the Mask2Former head, 512 crops, AdamW
1e-4, poly decay, 40k iterations, batch 4) on the embedded synthetic benchmark, so that nothing has to be downloaded
first; the paper's GTA5 -> Cityscapes setting is the recipe ``gta-dinov2-l``. A recipe states only what differs.
Unknown keys and wrongly typed values are errors that name the key.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rein_cli.errors import ReinError, did_you_mean, unknown_name

# The closed choices; the command line's options and the builders' checks derive from these.
# Rein; the frozen backbone alone; every backbone weight trained; the PEFT baselines of the paper's Table 3
Method = Literal["rein", "frozen", "full", "lora", "adaptformer", "vpt"]
Head = Literal["mask2former", "fpn", "semfpn"]  # the paper's head; a light per-pixel head; mmseg's Semantic FPN
InferenceMode = Literal["slide", "whole"]  # crop-sized windows averaged; the whole image at once
PredictionIds = Literal["label-ids", "train-ids"]  # saved predictions: Cityscapes label ids (the servers'), train ids
Precision = Literal["auto", "bf16", "fp32"]  # auto: bf16 autocast on a GPU that supports it, fp32 elsewhere

# Substrings of parameter names that get no weight decay, besides every norm layer's parameters (rein-facts §5.2):
# the Rein configs' custom keys plus the frozen-VFM configs' query_feat (the Rein head has none).
# VPT's prompts are per-layer learnable tokens initialised as Rein's are, and treated like them.
NO_DECAY_KEYS = (
    "learnable_tokens",
    "reins.scale",
    "level_embed",
    "query_embed",
    "query_feat",
    "norm",
    "vpt_prompts",
)


def choices(closed: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` choice, e.g. ``choices(InferenceMode) == ("slide", "whole")``."""
    return typing.get_args(closed)


def check_choice(kind: str, value: str, closed: Any) -> str:
    """``value`` if it is one of the ``closed`` choices, else an error naming the choices."""
    options = choices(closed)
    if value not in options:
        expected = f"{', '.join(options[:-1])} or {options[-1]}"
        raise ReinError(f"{kind} = {value!r} is invalid; it must be {expected}{did_you_mean(str(value), options)}")
    return value


def recipes_dir() -> Path | None:
    """The shipped recipes: ``rein_cli/recipes`` in an installed wheel, ``recipes/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    return next((d for d in (here / "recipes", here.parent / "recipes") if d.is_dir()), None)


# Every section is frozen: variants are made with ``dataclasses.replace``.


@dataclass(frozen=True)
class ReinConfig:
    token_length: int = 100
    rank: int = 16  # low-rank tokens A @ B (LoRAReins); 0 means full-rank tokens (Reins)
    query_dim: int = 256
    scale_init: float = 0.001
    link: bool = True  # the Mask2Former queries come from the tokens; False: the head learns its own (Table 6)
    shared_mlp: bool = True  # one MLP set for all layers; False: per-layer token2feat, delta_f, transform (Table 6)


@dataclass(frozen=True)
class LoRAConfig:
    """Method ``lora``: low-rank updates of the attention's q, k, v projections (peft's LoRA)."""

    rank: int = 8
    alpha: int = 8  # the update is scaled by alpha / rank
    dropout: float = 0.0  # on LoRA's input, while training


@dataclass(frozen=True)
class AdaptFormerConfig:
    """Method ``adaptformer``: a parallel bottleneck adapter on every block's MLP branch."""

    bottleneck: int = 64
    scale: float = 0.1  # fixed factor of the adapter's output


@dataclass(frozen=True)
class VPTConfig:
    """Method ``vpt``: VPT-deep, learnable prompt tokens inserted before every block."""

    length: int = 150  # prompts per block


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "dinov2-l"
    pretrained: bool = True  # False: random initialisation (tests, the offline demo)
    weights: str | None = None  # a local safetensors of backbone weights (from `rein convert`) instead of the Hub's
    backbone_revision: str | None = None  # the Hub commit of the pretrained weights (recorded; None: the latest)
    method: Method = "rein"
    head: Head = "mask2former"
    head_channels: int = 256  # width of the fpn head
    num_classes: int | None = None  # None: the training data's classes (19 for the Cityscapes label space)
    crop_size: int = 512
    feature_indices: tuple[int, ...] | None = None  # None: the backbone's own (DINOv2-L: 7, 11, 15, 23)
    backbone_kwargs: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))  # e.g. depth=2
    rein: ReinConfig = field(default_factory=ReinConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    adaptformer: AdaptFormerConfig = field(default_factory=AdaptFormerConfig)
    vpt: VPTConfig = field(default_factory=VPTConfig)


@dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...] = ("synthetic",)  # one dataset, or several concatenated (multi-source training)
    eval: tuple[str, ...] = ("synthetic",)
    root: str | None = None  # prepared datasets; None: $REIN_HOME/datasets
    batch_size: int = 4  # the global batch: per device batch_size / (devices x train.accumulation)
    num_workers: int = 4  # loader processes per device
    resize_ratios: tuple[float, ...] = tuple(k / 10 for k in range(5, 21))  # short edge / crop
    max_size_ratio: float = 4.0  # long edge at most this times the crop (2048 for 512 crops)
    cat_max_ratio: float = 0.75
    photometric: bool = True


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    power: float = 0.9  # poly decay exponent
    warmup_iters: int = 0
    backbone_lr_mult: float = 0.1  # learning-rate factor of the pretrained backbone (method "full")
    no_decay_keys: tuple[str, ...] = NO_DECAY_KEYS  # parameter-name substrings without weight decay (norms aside)


@dataclass(frozen=True)
class TrainConfig:
    max_iters: int = 40000
    log_interval: int = 50
    checkpoint_interval: int = 4000
    seed: int = 42
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    init_from: str | None = None  # a checkpoint (folder or hf://org/name[@revision]) whose weights start the run
    precision: Precision = "auto"
    tf32: bool = True  # TF32 matmuls and convolutions on CUDA (no effect elsewhere)
    checkpointing: bool = False  # activation checkpointing of the frozen backbone's blocks (less memory, more time)
    accumulation: int = 1  # gradient accumulation steps per iteration
    keep_checkpoints: int = 3  # the last N step checkpoints kept in the run directory
    eval_interval: int = 0  # evaluate on data.eval every N iterations and keep the best; 0: after training only


@dataclass(frozen=True)
class EvalConfig:
    mode: InferenceMode = "slide"
    stride: int | None = None  # slide stride; None: two thirds of the crop (341 for 512)
    flip: bool = False  # test-time augmentation: average with the horizontally flipped image's scores


@dataclass(frozen=True)
class Config:
    description: str = ""  # one line for `rein train --list`
    # published figures for this setting: {dataset: [{mIoU, split, source}]}, the schema of the released adapters
    reported: Mapping[str, Any] = field(default_factory=lambda: types.MappingProxyType({}))
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def to_dict(value: Any) -> Any:
    """A config (or any section of one) as plain YAML/JSON data: dicts, lists, numbers, strings."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: to_dict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    return value


def rein_home() -> Path:
    """``$REIN_HOME``, default ``~/.cache/rein``: prepared datasets and converted weights."""
    return Path(os.environ.get("REIN_HOME") or Path.home() / ".cache" / "rein")


def data_root(cfg: DataConfig) -> Path:
    return Path(cfg.root) if cfg.root else rein_home() / "datasets"


# ----------------------------------------------------------------------------- building from dicts


def _check_value(value: Any, annotation: Any, key: str) -> Any:
    """``value`` converted to ``annotation`` (int -> float, str -> bool, list -> tuple), or an error naming ``key``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key)
            except ReinError as err:
                errors.append(str(err))
        raise ReinError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        return check_choice(key, value, annotation)
    if origin is tuple:
        if isinstance(value, str) and typing.get_args(annotation)[-1] is Ellipsis:
            value = [value]  # one name where a list of names is expected
        if not isinstance(value, (list, tuple)):
            raise ReinError(f"{key} must be a list, got {value!r}")
        items = typing.get_args(annotation)
        if items[-1] is Ellipsis:
            items = (items[0],) * len(value)
        elif len(value) != len(items):
            raise ReinError(f"{key} must be a list of {len(items)} values, got {value!r}")
        return tuple(_check_value(v, item, f"{key}[{i}]") for i, (v, item) in enumerate(zip(value, items, strict=True)))
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise ReinError(f"{key} must be a mapping, got {value!r}")
        return types.MappingProxyType(dict(value))  # read-only, like the rest of the config
    if annotation is Any:
        return value
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is bool and isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    if annotation is bool and isinstance(value, bool):
        return value
    if annotation is float and is_number:
        return float(value)
    if annotation is int and is_number and isinstance(value, int):
        return value
    if annotation is str and (isinstance(value, str) or is_number):
        return str(value)
    raise ReinError(f"{key} must be {getattr(annotation, '__name__', annotation)}, got {value!r}")


def merge_keys(obj: Any, data: Mapping[str, Any], where: str = "") -> Any:
    """A copy of config section ``obj`` with the keys in ``data`` set (recursively), each type-checked and named
    ``<where><key>`` in errors; a section's value is a mapping of its keys or an instance of the section. Unknown
    keys are errors with a "did you mean"."""
    hints = typing.get_type_hints(type(obj))
    changes = {}
    for key, value in data.items():
        full = f"{where}{key}"
        if key not in hints:
            raise unknown_name("config key", full, [f"{where}{k}" for k in hints])
        current = changes.get(key, getattr(obj, key))
        if dataclasses.is_dataclass(current):
            value = to_dict(value) if isinstance(value, type(current)) else value
            if not isinstance(value, Mapping):
                raise ReinError(
                    f"{full} is a section; give its keys ({', '.join(typing.get_type_hints(type(current)))})"
                )
            changes[key] = merge_keys(current, value, f"{full}.")
        else:
            changes[key] = _check_value(value, hints[key], full)
    return dataclasses.replace(obj, **changes)


def config_from_dict(data: dict[str, Any]) -> Config:
    return merge_keys(Config(), data or {})


def shipped_recipes() -> dict[str, Path]:
    """{name: file} of the shipped recipes, sorted by name; a name starting with ``_`` is a base for others."""
    folder = recipes_dir()
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder else {}


def recipe_path(recipe: str | Path) -> Path:
    """A recipe file, or the name of one shipped in ``recipes/`` (``demo`` -> ``recipes/demo.yaml``)."""
    path = Path(recipe)
    if path.is_file():
        return path
    shipped = shipped_recipes()
    if str(recipe) in shipped:
        return shipped[str(recipe)]
    raise ReinError(
        f'recipe "{recipe}" is neither a file nor a shipped recipe{did_you_mean(str(recipe), shipped)}; '
        f"shipped: {', '.join(sorted(shipped)) or 'none'}"
    )


def recipe_name(recipe: str | Path | None) -> str | None:
    """The name a run records for its recipe: a shipped recipe's name, a recipe file's stem (``my/abl.yaml`` ->
    ``abl``); None without one."""
    return None if recipe is None else Path(recipe).stem


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value); values are Python literals, or plain strings."""
    if "=" not in text:
        raise ReinError(f'--set "{text}" must look like key=value, e.g. optim.lr=2e-4')
    key, raw = text.split("=", 1)
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
    return key.strip().split("."), value


def _positive(v: Any) -> bool:
    return v >= 1


def _finite(v: Any) -> bool:
    return math.isfinite(v)


def _optional_name(v: Any) -> bool:
    return v is None or bool(str(v).strip())


def _reported_ok(reported: Mapping[str, Any]) -> bool:
    """The released adapters' ``reported`` schema: each dataset a list of {mIoU, split (val/test), source}."""
    for figures in reported.values():
        if not isinstance(figures, (list, tuple)) or not figures:
            return False
        for f in figures:
            if not isinstance(f, Mapping) or set(f) != {"mIoU", "split", "source"}:
                return False
            if isinstance(f["mIoU"], bool) or not isinstance(f["mIoU"], (int, float)) or not 0 <= f["mIoU"] <= 100:
                return False
            if f["split"] not in ("val", "test") or not isinstance(f["source"], str) or not f["source"].strip():
                return False
    return True


# Every configuration key and what it must be (a test fails when a key has no rule). The types are checked when
# the value is set; these are the ranges, lengths and shapes no run can do without.
RULES: dict[str, tuple[Any, str]] = {
    "model.backbone": (lambda v: bool(v.strip()), "a backbone name (rein models lists them)"),
    "model.pretrained": (lambda v: isinstance(v, bool), "true or false"),
    "model.weights": (_optional_name, "null or the path of a safetensors file"),
    "model.backbone_revision": (_optional_name, "null or a Hub revision (branch, tag or commit)"),
    "model.method": (lambda v: v in choices(Method), " or ".join(choices(Method))),
    "model.head": (lambda v: v in choices(Head), " or ".join(choices(Head))),
    "model.head_channels": (_positive, ">= 1"),
    "model.num_classes": (
        lambda v: v is None or 1 <= v <= 255,
        "null (the training data's classes) or between 1 and 255 (labels are 8-bit, 255 means ignore)",
    ),
    "model.crop_size": (lambda v: v >= 32 and v % 16 == 0, "a multiple of 16, >= 32"),
    "model.feature_indices": (
        lambda v: v is None or (len(v) == 4 and list(v) == sorted(set(v)) and v[0] >= 0),
        "null or 4 increasing block indices >= 0",
    ),
    "model.backbone_kwargs": (lambda v: all(isinstance(k, str) for k in v), "a mapping of timm argument names"),
    "model.rein.token_length": (lambda v: v >= 2, ">= 2 (token 0 is dropped after the softmax)"),
    "model.rein.rank": (lambda v: v >= 0, ">= 0 (0: full-rank tokens)"),
    "model.rein.query_dim": (_positive, ">= 1"),
    "model.rein.scale_init": (_finite, "a finite number"),
    "model.rein.link": (lambda v: isinstance(v, bool), "true or false"),
    "model.rein.shared_mlp": (lambda v: isinstance(v, bool), "true or false"),
    "model.lora.rank": (_positive, ">= 1"),
    "model.lora.alpha": (_positive, ">= 1"),
    "model.lora.dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "model.adaptformer.bottleneck": (_positive, ">= 1"),
    "model.adaptformer.scale": (lambda v: v > 0 and math.isfinite(v), "> 0"),
    "model.vpt.length": (_positive, ">= 1"),
    "description": (lambda v: "\n" not in v, "one line of text"),
    "reported": (lambda v: _reported_ok(v), "a mapping {dataset: [{mIoU: number, split: val or test, source: text}]}"),
    "data.train": (
        lambda v: len(v) > 0 and all(str(x).strip() for x in v),
        "a dataset name or prepared folder, or a list of them",
    ),
    "data.eval": (lambda v: all(str(x).strip() for x in v), "a list of dataset names or prepared folders"),
    "data.root": (_optional_name, "null or a folder"),
    "data.batch_size": (_positive, ">= 1"),
    "data.num_workers": (lambda v: v >= 0, ">= 0"),
    "data.resize_ratios": (lambda v: len(v) > 0 and all(r > 0 and math.isfinite(r) for r in v), "a list of ratios > 0"),
    "data.max_size_ratio": (lambda v: v > 0 and math.isfinite(v), "> 0"),
    "data.cat_max_ratio": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "data.photometric": (lambda v: isinstance(v, bool), "true or false"),
    "optim.lr": (lambda v: v > 0 and math.isfinite(v), "> 0"),
    "optim.weight_decay": (lambda v: v >= 0 and math.isfinite(v), ">= 0"),
    "optim.betas": (lambda v: all(0 <= b < 1 for b in v), "two values in [0, 1), e.g. [0.9, 0.999]"),
    "optim.eps": (lambda v: v > 0 and math.isfinite(v), "> 0"),
    "optim.power": (lambda v: v >= 0 and math.isfinite(v), ">= 0"),
    "optim.warmup_iters": (lambda v: v >= 0, ">= 0"),
    "optim.backbone_lr_mult": (lambda v: v >= 0 and math.isfinite(v), ">= 0"),
    "optim.no_decay_keys": (lambda v: all(str(k).strip() for k in v), "a list of parameter-name substrings"),
    "train.max_iters": (lambda v: v >= 0, ">= 0"),
    "train.log_interval": (_positive, ">= 1"),
    "train.checkpoint_interval": (_positive, ">= 1"),
    "train.seed": (lambda v: 0 <= v < 2**32, "in [0, 2^32)"),
    "train.device": (lambda v: bool(v.strip()), "auto, cpu, cuda or cuda:N"),
    "train.init_from": (_optional_name, "null or a checkpoint folder or hf://org/name"),
    "train.precision": (lambda v: v in choices(Precision), " or ".join(choices(Precision))),
    "train.tf32": (lambda v: isinstance(v, bool), "true or false"),
    "train.checkpointing": (lambda v: isinstance(v, bool), "true or false"),
    "train.accumulation": (_positive, ">= 1"),
    "train.keep_checkpoints": (_positive, ">= 1"),
    "train.eval_interval": (lambda v: v >= 0, ">= 0 (0: evaluate after training only)"),
    "eval.mode": (lambda v: v in choices(InferenceMode), " or ".join(choices(InferenceMode))),
    "eval.stride": (lambda v: v is None or v >= 1, "null or >= 1"),
    "eval.flip": (lambda v: isinstance(v, bool), "true or false"),
}


def check_section(section: Any, where: str) -> Any:
    """Check every key of a config section (e.g. a checkpoint's ``model``) against `RULES`, naming the key."""
    for f in dataclasses.fields(section):
        key, value = f"{where}{f.name}", getattr(section, f.name)
        if dataclasses.is_dataclass(value):
            check_section(value, f"{key}.")
            continue
        ok, expected = RULES[key]
        try:
            valid = bool(ok(value))
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise ReinError(f"{key} = {value!r} is invalid; it must be {expected}")
    return section


def check_config(cfg: Config) -> Config:
    """Reject values no run can use, naming the key: every key's rule, then the rules between keys."""
    check_section(cfg, "")
    per_device_batch(cfg.data.batch_size, 1, cfg.train.accumulation)
    if cfg.eval.stride is not None and cfg.eval.stride > cfg.model.crop_size:
        raise ReinError(
            f"eval.stride = {cfg.eval.stride} is larger than model.crop_size = {cfg.model.crop_size}: windows would "
            "leave pixels out; use a stride <= the crop (default: 2/3 of it)"
        )
    return cfg


def per_device_batch(batch_size: int, world: int, accumulation: int) -> int:
    """Images per process per micro-step: the global ``data.batch_size`` / (processes x accumulation steps); an
    error when it does not divide."""
    if batch_size % (world * accumulation):
        raise ReinError(
            f"data.batch_size = {batch_size} (the global batch) does not divide into {world} device(s) x "
            f"{accumulation} accumulation step(s) (train.accumulation); choose a multiple of {world * accumulation}"
        )
    return batch_size // (world * accumulation)


def _read_recipe(recipe: str | Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe's data with its ``base:`` recipes applied under it (a name, or a path relative to the recipe)."""
    import yaml

    path = recipe_path(recipe)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ReinError(f"recipe {path} is not valid YAML: {err}") from err
    except UnicodeDecodeError as err:
        raise ReinError(
            f"recipe {path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from err
    except OSError as err:
        raise ReinError(f"cannot read recipe {path}: {err.strerror}") from err
    if not isinstance(data, dict):
        raise ReinError(f"recipe {path} must be a mapping of sections (model, data, optim, train, eval)")
    base = data.pop("base", None)
    try:  # this file's own keys and types, so that an error names the file that holds the key
        config_from_dict(data)
    except ReinError as err:
        raise ReinError(f"recipe {path}: {err}") from None
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ReinError(f"base in recipe {path} must be the name or path of another recipe, got {base!r}")
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ReinError(f"recipe {path} inherits from itself ({chain}); remove a base: line")
    relative = path.parent / base
    parent = _read_recipe(relative if relative.is_file() else base, (*seen, path.resolve()))
    return _deep_merge(parent, data)


def _deep_merge(base: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``data`` on top: sections merge key by key, any other value (lists too) is replaced."""
    merged = dict(base)
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "reported":
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None, **flags: Any) -> Config:
    """Defaults, then the recipe (over its ``base:`` recipes), then ``--set`` overrides, then explicit flags (dotted
    keys; None = not set)."""
    data = _read_recipe(recipe) if recipe is not None else {}
    cfg = from_recipe = config_from_dict(data)
    items = [parse_override(o) for o in overrides or []]
    items += [(key.split("."), value) for key, value in flags.items() if value is not None]
    for keys, value in items:
        nested: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            nested = {k: nested}
        cfg = merge_keys(cfg, nested)
    try:
        return check_config(cfg)
    except ReinError:
        if recipe is None:
            raise
        try:  # the recipe's own value is at fault, not an override: name the recipe
            check_config(from_recipe)
        except ReinError as err:
            raise ReinError(f"recipe {recipe_path(recipe)}: {err}") from None
        raise


def format_recipes() -> str:
    """Every shipped recipe in a few lines: name and description; backbone, data, crop, iterations, global batch;
    the published figures (test-server ones marked). Bases (names starting with "_") come last."""
    recipes = shipped_recipes()
    if not recipes:
        return "no shipped recipes found"
    lines, bases = [], []
    for name in recipes:
        cfg = load_config(name)
        method = "" if cfg.model.method == ModelConfig.method else f" ({cfg.model.method})"
        block = [
            f"{name}: {cfg.description or '(no description)'}",
            f"    {cfg.model.backbone}{method}  {' + '.join(cfg.data.train)} -> {', '.join(cfg.data.eval) or '-'}  "
            f"crop {cfg.model.crop_size}, {cfg.train.max_iters} iters, batch {cfg.data.batch_size}",
        ]
        if cfg.reported:
            figures = "; ".join(
                f"{dataset} "
                + " / ".join(f"{float(f['mIoU'])}" + (" test" if f["split"] == "test" else "") for f in items)
                for dataset, items in cfg.reported.items()
            )
            block.append(f"    reported: {figures}")
        (bases if name.startswith("_") else lines).extend(block)
    if bases:
        lines += ["", "bases (the recipes above inherit them with `base:`; not meant to be trained alone):", *bases]
    lines += ["", "run one with: rein train NAME (see docs/recipes.md)"]
    return "\n".join(lines)
