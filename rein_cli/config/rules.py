"""What every configuration key must be (`RULES`: ranges, lengths, shapes) and the rules between keys, checked before
a run starts; every problem names its key."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from rein_cli.config.figures import Published
from rein_cli.config.sections import Config, Head, InferenceMode, Method, Neck, Precision, choices
from rein_cli.errors import ReinError


def _positive(v: Any) -> bool:
    return v >= 1


def _finite(v: Any) -> bool:
    return math.isfinite(v)


def _optional_name(v: Any) -> bool:
    return v is None or bool(str(v).strip())


def _reported_ok(reported: Mapping[str, Any]) -> bool:
    """The released adapters' ``reported`` schema: each dataset a list of {mIoU, split (val/test), source} and
    optionally the checkpoint it was measured on; the mIoU a number, or text keeping its published digits."""
    for figures in reported.values():
        if not isinstance(figures, (list, tuple)) or not figures:
            return False
        for f in figures:
            keys = {"mIoU", "split", "source"}
            if not isinstance(f, Mapping) or not keys <= set(f) <= keys | {"checkpoint"}:
                return False
            try:
                if not 0 <= Published(f["mIoU"]) <= 100:
                    return False
            except ValueError:
                return False
            if not isinstance(f.get("checkpoint", ""), str):
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
    "model.neck": (lambda v: v in choices(Neck), " or ".join(choices(Neck))),
    "model.class_embedding_twice": (lambda v: isinstance(v, bool), "true or false"),
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
    "reported": (
        lambda v: _reported_ok(v),
        "a mapping {dataset: [{mIoU: number, split: val or test, source: text, checkpoint: text (optional)}]}",
    ),
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
    "train.compile": (lambda v: isinstance(v, bool), "true or false"),
    "eval.mode": (lambda v: v in choices(InferenceMode), " or ".join(choices(InferenceMode))),
    "eval.stride": (lambda v: v is None or v >= 1, "null or >= 1"),
    "eval.flip": (lambda v: isinstance(v, bool), "true or false"),
    "eval.window_batch": (lambda v: v is None or v >= 1, "null (automatic) or >= 1 windows per model call"),
    "eval.precision": (lambda v: v in choices(Precision), " or ".join(choices(Precision))),
    "eval.compile": (lambda v: isinstance(v, bool), "true or false"),
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
            f"{accumulation} accumulation step(s) as train.accumulation = {accumulation}; choose a multiple of "
            f"{world * accumulation}"
        )
    return batch_size // (world * accumulation)
