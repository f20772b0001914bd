"""The configuration's types: the closed choices, the frozen sections of a run's settings and their defaults, and
building them from plain data with every value type-checked and named by its key."""

from __future__ import annotations

import dataclasses
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
# between backbone and head: the bilinear pyramid of the Rein backbones; mmseg's MultiLevelNeck (official frozen CLIP-L)
Neck = Literal["none", "multilevel"]
InferenceMode = Literal["slide", "whole"]  # crop-sized windows averaged; the whole image at once
PredictionIds = Literal["label-ids", "train-ids"]  # saved predictions: Cityscapes label ids (the servers'), train ids
# auto: bf16 autocast where the device has native bf16 (training: GPUs only; inference: CPUs too), fp32 elsewhere
Precision = Literal["auto", "bf16", "fp32"]

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
    neck: Neck = "none"  # multilevel: mmseg's MultiLevelNeck (1x1, resize x4/x2/x1/x0.5, 3x3) instead of the pyramid
    class_embedding_twice: bool = False  # clip-l: the class token gets CLIP's class embedding twice (official quirk)
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
    compile: bool = False  # torch.compile the model's forward for training (and the run's evaluations)


@dataclass(frozen=True)
class EvalConfig:
    mode: InferenceMode = "slide"
    stride: int | None = None  # slide stride; None: two thirds of the crop (341 for 512)
    flip: bool = False  # test-time augmentation: average with the horizontally flipped image's scores
    window_batch: int | None = None  # most windows per model call; None: automatic (from free memory on a GPU)
    precision: Precision = "auto"  # bf16 autocast where the device has native bf16; the scores stay float32
    compile: bool = False  # torch.compile the model's forward for the run's evaluations


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
