"""The training loop: iteration-based, one function, top to bottom (build, loop, log, checkpoint, evaluate)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import yaml
from torch.utils.data import ConcatDataset

from rein_cli.config import Config, check_config, data_root
from rein_cli.data.catalog import locate
from rein_cli.data.dataset import SegmentationDataset, infinite_loader
from rein_cli.data.prepare import ensure_prepared
from rein_cli.data.transforms import TrainTransform
from rein_cli.engine.checkpoint import init_from_checkpoint, save_checkpoint
from rein_cli.engine.evaluate import evaluate
from rein_cli.engine.optim import build_optimizer, lr_at
from rein_cli.engine.runs import choose_run_dir, claim_run_dir, resolve_device, seed_everything
from rein_cli.errors import ReinError
from rein_cli.io import write_text
from rein_cli.models.backbone import backbone_spec
from rein_cli.models.segmentor import count_parameters, segmentor_from_config
from rein_cli.progress import Progress

log = logging.getLogger(__name__)


def train(cfg: Config, out: Path | None = None, *, progress: bool = True, evaluate_after: bool = True) -> Path:
    """Train the model ``cfg`` describes; returns the run directory.

    The run directory gets ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per log step),
    ``checkpoints/last`` (a checkpoint directory) and, when ``cfg.data.eval`` names datasets, ``eval/``.
    """
    check_config(cfg)
    run = choose_run_dir(out)
    device = resolve_device(cfg.train.device)
    root = data_root(cfg.data)
    backbone_spec(cfg.model.backbone)  # unknown names fail now, before any data is prepared or model built
    for name in [*cfg.data.train, *cfg.data.eval]:
        locate(name, root)
    sources = [ensure_prepared(name, root, progress=progress) for name in cfg.data.train]
    manifest = sources[0]  # the first source's classes and palette name the model's
    for source in sources:
        if len(source.classes) != cfg.model.num_classes:
            raise ReinError(
                f"dataset {source.dataset} has {len(source.classes)} classes but model.num_classes is "
                f"{cfg.model.num_classes}; set --set model.num_classes={len(source.classes)}"
            )
        if source.classes != manifest.classes:
            raise ReinError(
                f"training datasets {manifest.dataset} and {source.dataset} name different classes; "
                "multi-source training needs one label space"
            )
    for name in cfg.data.eval:  # evaluation after training must be possible: known now, not after hours
        target = ensure_prepared(name, root, progress=progress)
        if len(target.classes) != cfg.model.num_classes:
            raise ReinError(
                f"evaluation dataset {target.dataset} has {len(target.classes)} classes but the model "
                f"{cfg.model.num_classes}; evaluate on datasets with the same classes, e.g. "
                f'--set "data.eval=[{manifest.dataset}]", or none with --set "data.eval=[]"'
            )
    seed_everything(cfg.train.seed)
    model = segmentor_from_config(cfg.model, download=True, classes=manifest.classes, palette=manifest.palette)
    if cfg.train.init_from:
        init_from_checkpoint(model, cfg.train.init_from)
        log.info("initialised from %s", cfg.train.init_from)
    model = model.to(device)
    transform = TrainTransform(
        cfg.model.crop_size,
        model.mean,
        model.std,
        resize_ratios=cfg.data.resize_ratios,
        max_size_ratio=cfg.data.max_size_ratio,
        cat_max_ratio=cfg.data.cat_max_ratio,
        photometric=cfg.data.photometric,
    )
    parts = [SegmentationDataset(source, "train", transform) for source in sources]
    dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)  # the official multi-source wrapper
    loader = infinite_loader(
        dataset, batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers, seed=cfg.train.seed
    )
    optimizer = build_optimizer(
        model,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        backbone_lr_mult=cfg.optim.backbone_lr_mult,
        no_decay_keys=cfg.optim.no_decay_keys,
    )
    with claim_run_dir(run):  # only once the model and the data are known to be fine; held until the run ends
        write_text(run / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        trainable, frozen = count_parameters(model, True), count_parameters(model, False)
        log.info(
            "model: %s backbone, %s trainable / %s frozen parameters; %d training images from %s",
            cfg.model.backbone,
            f"{trainable:,}",
            f"{frozen:,}",
            len(dataset),
            " + ".join(s.dataset for s in sources),
        )

        def checkpoint(step: int) -> Path:
            names = [s.dataset for s in sources]  # the datasets that never enter a domain-generalisation mean
            info = {"trained_on": " + ".join(names), "training_datasets": names, "iterations": step}
            return save_checkpoint(model, run / "checkpoints" / "last", info=info)

        model.train()
        max_iters = cfg.train.max_iters
        start, window = time.perf_counter(), []
        with (
            open(run / "metrics.jsonl", "a") as metrics,
            Progress(max_iters, "training", bar=progress, leave=True) as bar,
        ):
            for step in range(max_iters):
                lr = lr_at(
                    step,
                    base_lr=cfg.optim.lr,
                    max_iters=max_iters,
                    power=cfg.optim.power,
                    warmup_iters=cfg.optim.warmup_iters,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_mult"]
                images, labels = next(loader)
                images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                losses = model.training_loss(images, labels)
                loss = sum(losses.values())
                if not torch.isfinite(loss):
                    raise ReinError(
                        f"the loss became {loss.item()} at iteration {step}; lower optim.lr or check the labels"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

                window.append(loss.item())
                if (step + 1) % cfg.train.log_interval == 0 or step + 1 == max_iters:
                    record = {
                        "step": step + 1,
                        "lr": lr,
                        "loss": sum(window) / len(window),
                        **{k: v.item() for k, v in losses.items()},
                        "time": time.perf_counter() - start,
                    }
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    bar.set(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                    window = []
                bar.update()
                if (step + 1) % cfg.train.checkpoint_interval == 0 and step + 1 < max_iters:
                    checkpoint(step + 1)
        last = checkpoint(max_iters)
        log.info("trained %d iterations in %.0f s; checkpoint: %s", max_iters, time.perf_counter() - start, last)

        if evaluate_after and cfg.data.eval:
            evaluate(
                model,
                list(cfg.data.eval),
                out=run / "eval",
                data_dir=root,
                mode=cfg.eval.mode,
                stride=cfg.eval.stride,
                progress=progress,
            )
        return run
