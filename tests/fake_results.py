"""Hand-made inputs of `rein compare`: a results.json with known numbers, and a training run around one (the
config.yaml `rein train` writes, a checkpoint's config.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

PAPER = {"cityscapes": 66.4, "bdd100k": 60.4, "mapillary": 66.1}


def results(
    folder: Path,
    values: dict[str, float],
    *,
    mean: float | None = None,
    params: int = 2_990_000,
    paper: bool = True,
    split: str = "val",
    **extra,
) -> Path:
    """A results.json of schema 2 with these mIoUs; ``mean`` defaults to the evaluator's rule (two-decimal mean)."""
    datasets = {
        name: {
            "mIoU": v,
            "mAcc": v + 5,
            "aAcc": v + 20,
            "per_class": {},
            "images": 10,
            "trained_on": False,
            "reported": [
                {"mIoU": 99.0, "split": "test", "source": "server"},
                {"mIoU": PAPER[name], "split": "val", "source": "paper Table 1"},
            ]
            if paper and name in PAPER
            else [],
        }
        for name, v in values.items()
    }
    data = {
        "schema": 2,
        "split": split,
        "method": "rein",
        "backbone": "dinov2-l",
        "trainable_parameters": params,
        "trained_on": ["gta5"],
        "model": {"backbone": "dinov2-l", "revision": None},
        "datasets": datasets,
        "mean_mIoU": mean if mean is not None else sum(round(v, 2) for v in values.values()) / len(values),
        "mean_of": list(values),
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(data))
    return folder / "results.json"


def fake_run(folder: Path, values: dict[str, float], *, checkpoint: dict[str, Any] | None = None, **settings) -> Path:
    """A run directory as `rein train` leaves it: config.yaml (the defaults, with ``settings`` given as
    ``train__seed=2`` for ``train.seed``), eval/results.json with ``values``, and, with ``checkpoint`` (its
    config.json's extra keys), a tiny checkpoints/last."""
    from rein_cli.config import Config

    config = Config().to_dict()
    for key, value in settings.items():
        section, name = key.split("__")
        config[section][name] = value
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    results(folder / "eval", values, paper=False)
    if checkpoint is not None:
        tiny_checkpoint(folder / "checkpoints" / "last", **checkpoint)
    return folder


def tiny_checkpoint(folder: Path, **info: Any) -> Path:
    """A real checkpoint folder of the tiny model, its config.json recording ``info`` (recipe, iterations ...)."""
    from rein_cli.engine.checkpoint import save_checkpoint

    from .helpers import tiny_segmentor

    return save_checkpoint(tiny_segmentor(), folder, info=info)
