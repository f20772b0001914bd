"""The training loop: iteration-based, one function, top to bottom (build, loop, log, checkpoint, evaluate)."""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from rein_cli.config import Config, check_config, data_root
from rein_cli.data.dataset import SegmentationDataset, infinite_loader
from rein_cli.data.registry import check_dataset, resolve_dataset
from rein_cli.data.transforms import TrainTransform
from rein_cli.engine.checkpoint import save_checkpoint
from rein_cli.engine.optim import build_optimizer, lr_at
from rein_cli.errors import ReinError
from rein_cli.io import write_text
from rein_cli.models.segmentor import count_parameters, segmentor_from_config

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ReinError(f'unknown device "{name}"; use auto, cpu, cuda or cuda:N') from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReinError(f"device {name} requested but CUDA is not available; use --device cpu")
    return device


def choose_run_dir(path: Path | None, base: Path = Path("runs"), name: str = "train") -> Path:
    """``path`` if it is new or empty (else an error); without one, the first free runs/train, runs/train-2, ..."""
    if path is not None:
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ReinError(f"output directory {path} already exists and is not empty; choose another --out")
        return path
    path, n = base / name, 1
    while path.exists():
        n += 1
        path = base / f"{name}-{n}"
    return path


def make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReinError(f"cannot create output directory {path}: {err.strerror}; choose another --out") from err


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(cfg: Config, out: Path | None = None, *, progress: bool = True, evaluate_after: bool = True) -> Path:
    """Train the model ``cfg`` describes; returns the run directory.

    The run directory gets ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per log step),
    ``checkpoints/last`` (a checkpoint directory) and, when ``cfg.data.eval`` names datasets, ``eval/``.
    """
    check_config(cfg)
    run = choose_run_dir(out)
    device = resolve_device(cfg.train.device)
    for name in [cfg.data.train, *cfg.data.eval]:  # unknown names fail now, not after training
        check_dataset(name, data_root(cfg.data))
    seed_everything(cfg.train.seed)
    model = segmentor_from_config(cfg.model, download=True).to(device)
    manifest = resolve_dataset(cfg.data.train, data_root(cfg.data), progress=progress)
    transform = TrainTransform(
        cfg.model.crop_size, model.mean, model.std, resize_ratios=cfg.data.resize_ratios,
        max_size_ratio=cfg.data.max_size_ratio, cat_max_ratio=cfg.data.cat_max_ratio, photometric=cfg.data.photometric,
    )  # fmt: skip
    dataset = SegmentationDataset(manifest, "train", transform)
    classes = dataset.manifest.classes
    if len(classes) != cfg.model.num_classes:
        raise ReinError(f"dataset {dataset.manifest.dataset} has {len(classes)} classes but model.num_classes is "
                        f"{cfg.model.num_classes}; set --set model.num_classes={len(classes)}")  # fmt: skip
    loader = infinite_loader(dataset, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, seed=cfg.train.seed)
    optimizer = build_optimizer(model, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas,
                                eps=cfg.optim.eps, backbone_lr_mult=cfg.optim.backbone_lr_mult)  # fmt: skip
    make_dir(run)  # only once the model and the data are known to be fine
    write_text(run / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log.info("model: %s backbone, %s trainable / %s frozen parameters; %d training images from %s",
             cfg.model.backbone, f"{count_parameters(model, True):,}", f"{count_parameters(model, False):,}",
             len(dataset), dataset.manifest.dataset)  # fmt: skip

    def checkpoint(step: int) -> Path:
        info = {"trained_on": dataset.manifest.dataset, "iterations": step}
        return save_checkpoint(model, run / "checkpoints" / "last", model_config=cfg.model, classes=classes,
                               palette=dataset.manifest.palette, mean=model.mean, std=model.std, info=info)  # fmt: skip

    model.train()
    max_iters = cfg.train.max_iters
    bar = tqdm(range(max_iters), desc="training", unit="it", disable=not progress, dynamic_ncols=True)
    start, window = time.perf_counter(), []
    with open(run / "metrics.jsonl", "a") as metrics:
        for step in bar:
            lr = lr_at(
                step, base_lr=cfg.optim.lr, max_iters=max_iters, power=cfg.optim.power, warmup_iters=cfg.optim.warmup_iters
            )
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_mult"]
            images, labels = next(loader)
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            losses = model.training_loss(images, labels)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise ReinError(f"the loss became {loss.item()} at iteration {step}; lower optim.lr or check the labels")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

            window.append(loss.item())
            if (step + 1) % cfg.train.log_interval == 0 or step + 1 == max_iters:
                record = {"step": step + 1, "lr": lr, "loss": sum(window) / len(window),
                          **{k: v.item() for k, v in losses.items()}, "time": time.perf_counter() - start}  # fmt: skip
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                window = []
            if (step + 1) % cfg.train.checkpoint_interval == 0 and step + 1 < max_iters:
                checkpoint(step + 1)
    bar.close()
    last = checkpoint(max_iters)
    log.info("trained %d iterations in %.0f s; checkpoint: %s", max_iters, time.perf_counter() - start, last)

    if evaluate_after and cfg.data.eval:
        from rein_cli.engine.evaluate import evaluate

        evaluate(model, cfg.data.eval, out=run / "eval", data_dir=data_root(cfg.data), mode=cfg.eval.mode,
                 stride=cfg.eval.stride, progress=progress)  # fmt: skip
    return run
