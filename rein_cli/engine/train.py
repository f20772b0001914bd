"""The training loop: iteration-based, one function, top to bottom (build, loop, log, checkpoint, evaluate).

One process per device (``torchrun``, or ``rein train --devices N``); rank 0 alone writes. Every
``train.checkpoint_interval`` iterations ``checkpoints/iter_<N>/`` gets the weights and ``training_state.pt``
(optimizer, step, every random generator, the data position), from which ``train(..., resume=RUN)``
continues exactly where the run stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import re
import shutil
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset

from rein_cli.config import Config, check_config, data_root, to_dict
from rein_cli.data.catalog import locate
from rein_cli.data.dataset import SegmentationDataset, TrainingSampler, training_loader
from rein_cli.data.prepare import ensure_prepared
from rein_cli.data.transforms import TrainTransform
from rein_cli.engine import distributed as dist
from rein_cli.engine.checkpoint import (
    CONFIG_FILE,
    TRAINING_STATE_FILE,
    init_from_checkpoint,
    load_training_state,
    read_checkpoint_config,
    save_checkpoint,
)
from rein_cli.engine.evaluate import evaluate
from rein_cli.engine.optim import build_optimizer, lr_at
from rein_cli.engine.runs import RunLock, choose_run_dir, claim_run_dir, resolve_device, seed_everything
from rein_cli.errors import ReinError
from rein_cli.io import write_text
from rein_cli.models.backbone import backbone_spec
from rein_cli.models.methods import uses_rein_queries
from rein_cli.models.segmentor import Segmentor, build_segmentor, count_parameters
from rein_cli.progress import Progress

log = logging.getLogger(__name__)

# what `--resume` may change: how long, where and how verbosely the run goes on, never what it computes
RESUMABLE = (
    "train.max_iters",
    "train.device",
    "data.num_workers",
    "train.log_interval",
    "train.checkpoint_interval",
    "train.eval_interval",
    "train.keep_checkpoints",
)
STATE_FORMAT = 1
STEP_DIR = re.compile(r"iter_(\d+)")


def train(
    cfg: Config,
    out: Path | None = None,
    *,
    progress: bool = True,
    evaluate_after: bool = True,
    resume: Path | None = None,
    recipe: str | None = None,
) -> Path:
    """Train the model ``cfg`` describes; returns the run directory.

    The run directory gets ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per log step and per
    evaluation), ``checkpoints/iter_<N>`` (the last ``train.keep_checkpoints`` step checkpoints, each with its
    training state), ``checkpoints/last`` (the latest weights), ``checkpoints/best`` (with
    ``train.eval_interval``: the highest mean mIoU) and, when ``cfg.data.eval`` names datasets, ``eval/``.
    ``resume``: a run directory to continue (``cfg`` may differ from its config only in `RESUMABLE` keys).
    ``recipe``: the recipe's name, recorded in every checkpoint's config.json (a resumed run keeps its own).
    """
    check_config(cfg)
    device = resolve_device(cfg.train.device)
    if dist.init_from_env(device) and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank())
    main, world, accumulation = dist.is_main(), dist.world_size(), cfg.train.accumulation
    if not main:
        logging.getLogger("rein_cli").setLevel(logging.WARNING)  # one process speaks
    per_device_batch(cfg.data.batch_size, world, accumulation)
    autocast = autocast_dtype(cfg.train.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.train.tf32
        torch.backends.cudnn.allow_tf32 = cfg.train.tf32

    state, resumed_from = None, None
    if resume is not None:
        run = Path(resume)
        if out is not None and Path(out).resolve() != run.resolve():
            raise ReinError(f"--resume {run} continues that run in place; leave out --out {out}")
        resumed_from, state = resume_point(run, cfg)
        recipe = recipe or read_checkpoint_config(resumed_from).get("recipe")
    else:
        run = dist.broadcast_object(choose_run_dir(out) if main else None)
    root = data_root(cfg.data)
    backbone_spec(cfg.model.backbone)  # unknown names fail now, before any data is prepared or model built
    for name in [*cfg.data.train, *cfg.data.eval]:
        locate(name, root)
    if not main:
        dist.barrier()  # rank 0 prepares the data first
    sources = [ensure_prepared(name, root, progress=progress and main) for name in cfg.data.train]
    manifest = sources[0]  # the first source's classes and palette name the model's
    if cfg.model.num_classes is None:  # the head is sized to the training data's classes
        cfg = replace(cfg, model=replace(cfg.model, num_classes=len(manifest.classes)))
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
        target = ensure_prepared(name, root, progress=progress and main)
        if len(target.classes) != cfg.model.num_classes:
            raise ReinError(
                f"evaluation dataset {target.dataset} has {len(target.classes)} classes but the model "
                f"{cfg.model.num_classes}; evaluate on datasets with the same classes, e.g. "
                f'--set "data.eval=[{manifest.dataset}]", or none with --set "data.eval=[]"'
            )
    if main:
        dist.barrier()
    seed_everything(cfg.train.seed)
    model = build_segmentor(cfg.model, download=True, classes=manifest.classes, palette=manifest.palette)
    if resumed_from is not None:
        init_from_checkpoint(model, resumed_from)
    elif cfg.train.init_from:
        init_from_checkpoint(model, cfg.train.init_from)
        log.info("initialised from %s", cfg.train.init_from)
    model.backbone.checkpointing = cfg.train.checkpointing
    model = model.to(device)
    net = model
    if world > 1:
        # the fpn and semfpn heads ignore the Rein queries: with the link on, their projection gets no gradient
        unused = cfg.model.head != "mask2former" and uses_rein_queries(cfg.model)
        ids = [device.index] if device.type == "cuda" else None
        if device.type == "cuda":  # batch statistics over every GPU's images (mmseg's SyncBN); CUDA only
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place for a Segmentor
        net = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)
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
    optimizer = build_optimizer(
        model,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay,
        betas=cfg.optim.betas,
        eps=cfg.optim.eps,
        backbone_lr_mult=cfg.optim.backbone_lr_mult,
        no_decay_keys=cfg.optim.no_decay_keys,
    )
    start = 0 if state is None else state["step"]
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
    sampler = TrainingSampler(
        len(dataset),
        batch_size=cfg.data.batch_size,
        seed=cfg.train.seed,
        start=start,
        accumulation=accumulation,
        rank=dist.rank(),
        world_size=world,
    )
    names = [s.dataset for s in sources]  # the datasets that never enter a domain-generalisation mean
    max_iters = cfg.train.max_iters
    checkpoints = run / "checkpoints"
    best = None if state is None else state.get("best_mIoU")
    window: list[list[float]] = [] if state is None else [list(w) for w in state.get("window", [])]
    elapsed = 0.0 if state is None else float(state.get("time", 0.0))

    lock = contextlib.nullcontext()
    if main:  # only once the model and the data are known to be fine; held until the run ends
        lock = RunLock(run) if state is not None else claim_run_dir(run)
    with lock:
        if main:
            if state is not None:
                clean_checkpoints(checkpoints)
                truncate_metrics(run / "metrics.jsonl", start)
            write_text(run / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            trainable, frozen = count_parameters(model, True), count_parameters(model, False)
            log.info(
                "model: %s backbone, %s trainable / %s frozen parameters; %d training images from %s; %d "
                "process(es) x %d image(s) x %d accumulation step(s)%s",
                cfg.model.backbone,
                f"{trainable:,}",
                f"{frozen:,}",
                len(dataset),
                " + ".join(names),
                world,
                sampler.per_device,
                accumulation,
                ", bf16 autocast" if autocast is not None else "",
            )
            if state is not None:
                log.info("resuming %s at iteration %d of %d", run, start, max_iters)
        dist.barrier()
        board = tensorboard(run) if main else None

        def info(step: int) -> dict[str, Any]:
            recorded = {"trained_on": " + ".join(names), "training_datasets": names, "iterations": step}
            recorded |= {"recipe": recipe} if recipe else {}
            return recorded | ({"reported": to_dict(cfg.reported)} if cfg.reported else {})

        def save(step: int) -> None:
            """``last``, then the step checkpoint (weights and training state); rank 0 writes, the others wait."""
            rng = dist.gather_objects(rng_state(device))
            if main:
                training_state = {
                    "format": STATE_FORMAT,
                    "step": step,
                    "optimizer": optimizer.state_dict(),
                    "rng": rng,
                    "best_mIoU": best,
                    "window": window,
                    "time": elapsed + time.perf_counter() - start_time,
                    "config_hash": config_hash(cfg),
                    "world_size": world,
                }
                save_checkpoint(model, checkpoints / "last", info=info(step))
                save_checkpoint(model, checkpoints / f"iter_{step}", info=info(step), training_state=training_state)
                prune_checkpoints(checkpoints, cfg.train.keep_checkpoints)
            dist.barrier()

        def run_evaluation(step: int, out: Path) -> None:
            """Every process evaluates its share of ``data.eval`` (sharded; rank 0 writes the report); the record goes
            into metrics.jsonl and the best checkpoint is kept when periodic evaluation is on. The training datasets
            never enter the mean."""
            nonlocal best
            result = evaluate(
                model,
                list(cfg.data.eval),
                out=out,
                data_dir=root,
                mode=cfg.eval.mode,
                stride=cfg.eval.stride,
                flip=cfg.eval.flip,
                progress=progress,
                trained_on=names,
                reported=cfg.reported,
            )
            if main:
                scores = {name: r["mIoU"] for name, r in result["datasets"].items()}
                if cfg.train.eval_interval:  # periodic evaluation: every result in metrics.jsonl
                    record = {"step": step, "eval": scores, "mean_mIoU": result["mean_mIoU"]}
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                if board is not None:
                    for name, value in scores.items():
                        board.add_scalar(f"eval/{name}", value, step)
                    board.add_scalar("eval/mean_mIoU", result["mean_mIoU"], step)
                if cfg.train.eval_interval and (best is None or result["mean_mIoU"] > best):
                    best = result["mean_mIoU"]
                    extra = {"mean_mIoU": best, "eval": scores}
                    save_checkpoint(model, checkpoints / "best", info=info(step) | extra)
                    log.info("iteration %d: mean mIoU %.2f, the best so far (checkpoints/best)", step, best)
            dist.barrier()

        model.train()
        if state is not None:  # last: everything above may draw from the generators
            restore_rng(state["rng"], device)
        loader = training_loader(dataset, sampler, num_workers=cfg.data.num_workers)
        start_time = time.perf_counter()
        with (
            open(run / "metrics.jsonl", "a") if main else contextlib.nullcontext() as metrics,
            Progress(max_iters, "training", bar=progress and main, leave=True, initial=start) as bar,
        ):
            for step in range(start, max_iters):
                lr = lr_at(
                    step,
                    base_lr=cfg.optim.lr,
                    max_iters=max_iters,
                    power=cfg.optim.power,
                    warmup_iters=cfg.optim.warmup_iters,
                )
                for group in optimizer.param_groups:
                    group["lr"] = lr * group["lr_mult"]
                optimizer.zero_grad(set_to_none=True)
                try:
                    micro_batches = (next(loader) for _ in range(accumulation))
                    totals = accumulate_gradients(net, model, micro_batches, accumulation, device, autocast, step)
                    optimizer.step()
                except torch.cuda.OutOfMemoryError as err:
                    raise ReinError(out_of_memory(cfg, sampler.per_device)) from err

                window.append(list(totals.values()))
                if (step + 1) % cfg.train.log_interval == 0 or step + 1 == max_iters:
                    means = torch.tensor(window, dtype=torch.float64).mean(0)
                    means = dist.all_reduce_sum(means) / world  # the mean over processes
                    record = {
                        "step": step + 1,
                        "lr": lr,
                        **dict(zip(totals, means.tolist(), strict=True)),
                        "time": elapsed + time.perf_counter() - start_time,
                    }
                    if main:
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                        if board is not None:
                            board.add_scalar("train/loss", record["loss"], step + 1)
                            board.add_scalar("train/lr", lr, step + 1)
                    bar.set(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                    window = []
                bar.update()
                done = step + 1
                periodic = cfg.train.eval_interval and done % cfg.train.eval_interval == 0
                if periodic and done < max_iters and cfg.data.eval:
                    run_evaluation(done, run / "eval" / f"iter_{done}")
                if done % cfg.train.checkpoint_interval == 0 and done < max_iters:
                    save(done)
            save(max_iters)
            seconds = elapsed + time.perf_counter() - start_time
            log.info("trained %d iterations in %.0f s; checkpoint: %s", max_iters, seconds, checkpoints / "last")
            if evaluate_after and cfg.data.eval:
                run_evaluation(max_iters, run / "eval")
        if board is not None:
            board.close()
    dist.shutdown()
    return run


def accumulate_gradients(
    net: torch.nn.Module,
    model: Segmentor,
    micro_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    accumulation: int,
    device: torch.device,
    autocast: torch.dtype | None,
    step: int,
) -> dict[str, float]:
    """Add the gradients of one iteration to the parameters' ``.grad``: each micro-batch's loss divided by the
    number of micro-batches (``accumulation``), so that a loss that is a mean over the batch gives the gradient
    of the whole batch; DDP synchronises at the last micro-batch only. Returns the loss terms, averaged likewise.

    The forward pass runs under ``autocast`` (bf16 or None), the loss in float32. Mask2Former's mask losses are
    divided by the number of masks of their own micro-batch (averaged over processes), as with that many more
    devices, not by the whole batch's."""
    totals: dict[str, float] = {}
    for micro, (images, labels) in enumerate(micro_batches):
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        last = micro == accumulation - 1
        sync = net.no_sync() if isinstance(net, DistributedDataParallel) and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                outputs = net(images)
            losses = model.head.loss(to_float(outputs), labels)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise ReinError(
                    f"the loss became {loss.item()} at iteration {step}; lower optim.lr or check the labels"
                )
            (loss / accumulation).backward()
        for key, value in {"loss": loss, **losses}.items():
            totals[key] = totals.get(key, 0.0) + value.item() / accumulation
    return totals


def per_device_batch(batch_size: int, world: int, accumulation: int) -> int:
    """Images per process per micro-step: the global ``data.batch_size`` / (processes x accumulation steps)."""
    if batch_size % (world * accumulation):
        raise ReinError(
            f"data.batch_size = {batch_size} (the global batch) does not divide into {world} device(s) x "
            f"{accumulation} accumulation step(s) (train.accumulation); choose a multiple of {world * accumulation}"
        )
    return batch_size // (world * accumulation)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast type of ``train.precision``: auto is bf16 on a CUDA device that has it, float32 elsewhere
    (the CPU too); bf16 asked for explicitly also autocasts on the CPU."""
    if precision == "fp32":
        return None
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if precision == "bf16" and not supported:
            raise ReinError(f"train.precision = bf16 but {device} has no bfloat16 support; use auto or fp32")
        return torch.bfloat16 if supported else None
    return torch.bfloat16 if precision == "bf16" else None


def to_float(value: Any) -> Any:
    """Floating tensors of a nested (list, tuple) structure in float32 (the losses are computed in float32)."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(to_float(v) for v in value)
    return value


def out_of_memory(cfg: Config, per_device: int) -> str:
    fixes = [f"lower data.batch_size (now {cfg.data.batch_size}, {per_device} per device per step)"]
    fixes.append(f"raise train.accumulation (now {cfg.train.accumulation})")
    if not cfg.train.checkpointing:
        fixes.append("enable train.checkpointing=true")
    fixes.append(f"lower model.crop_size (now {cfg.model.crop_size})")
    return "out of GPU memory during training; " + ", ".join(fixes) + " (with --set)"


def tensorboard(run: Path):
    """A TensorBoard writer into ``run/tensorboard``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard logging off (pip install tensorboard to turn it on); metrics.jsonl has everything")
        return None
    return SummaryWriter(str(run / "tensorboard"))


# ---- exact resume ------------------------------------------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every random generator of this process: torch (CPU and CUDA), numpy, Python."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
        "python": [version, list(internal), python_gauss],
    }


def restore_rng(states: list[dict[str, Any]], device: torch.device) -> None:
    """Put back this process's generators (rank order; a run resumed on another number of processes reuses
    rank 0's for all: it goes on, but not bit for bit as the uninterrupted run)."""
    if len(states) != dist.world_size():
        log.warning("the run was saved by %d process(es), resumed on %d: not bit-exact", len(states), dist.world_size())
    state = states[dist.rank()] if len(states) == dist.world_size() else states[0]
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and state["cuda"]:
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, python_gauss = state["python"]
    random.setstate((version, tuple(internal), python_gauss))


def flat_config(cfg: Config | dict) -> dict[str, Any]:
    """``{"train.max_iters": 40000, ...}`` in YAML's types (what config.yaml holds)."""
    data = cfg if isinstance(cfg, dict) else yaml.safe_load(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and prefix.count(".") < 1 and not prefix.endswith(("reported", "backbone_kwargs")):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            flat[prefix] = value

    walk("", data)
    return flat


def config_hash(cfg: Config) -> str:
    """SHA-256 of the settings a resumed run must share with the run (all but `RESUMABLE`)."""
    fixed = {k: v for k, v in flat_config(cfg).items() if k not in RESUMABLE}
    return hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()


def resume_point(run: Path, cfg: Config) -> tuple[Path, dict[str, Any]]:
    """The newest complete step checkpoint of ``run`` and its training state, after checking that ``cfg`` differs
    from the run's ``config.yaml`` only in `RESUMABLE` keys."""
    config_file = run / "config.yaml"
    if not run.is_dir() or not config_file.is_file():
        raise ReinError(f"--resume {run}: not a training run (no config.yaml); give a run directory of `rein train`")
    try:
        saved = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ReinError(f"{config_file} is not valid YAML: {err}") from err
    if not isinstance(saved, dict):
        raise ReinError(f"{config_file} is not a run configuration; give a run directory of `rein train`")
    ours, theirs = flat_config(cfg), flat_config(saved)
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k) and k not in RESUMABLE)
    if changed:
        details = ", ".join(f"{k} ({theirs.get(k)!r} -> {ours.get(k)!r})" for k in changed[:5])
        raise ReinError(
            f"--resume {run}: the settings differ from the run's config.yaml in {details}; a resumed run may change "
            f"only {', '.join(RESUMABLE)}; start a new run to change the others"
        )
    steps = sorted(
        (int(m.group(1)), path)
        for path in (run / "checkpoints").glob("iter_*")
        if (m := STEP_DIR.fullmatch(path.name))
        and (path / TRAINING_STATE_FILE).is_file()
        and (path / CONFIG_FILE).is_file()
    )
    if not steps:
        raise ReinError(
            f"--resume {run}: no checkpoint with a training state (checkpoints/iter_<N>/{TRAINING_STATE_FILE}) "
            "yet; the run stopped before its first train.checkpoint_interval: start it again"
        )
    step, path = steps[-1]
    state = load_training_state(path)
    if state.get("format") != STATE_FORMAT or state["step"] != step:
        raise ReinError(f"{path / TRAINING_STATE_FILE} does not match its folder; resume from an earlier checkpoint")
    if state.get("config_hash") != config_hash(cfg):
        raise ReinError(f"{path} was saved with other settings than {config_file}; the run directory was edited")
    if step >= cfg.train.max_iters and step > 0:
        raise ReinError(
            f"--resume {run}: the run already reached iteration {step}; give --iters beyond it to train further"
        )
    return path, state


def clean_checkpoints(folder: Path) -> None:
    """Remove what a killed run left half-written: temporary and half-deleted checkpoint folders."""
    for path in folder.glob(".iter_*"):
        shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Keep the newest ``keep`` step checkpoints; each older one is renamed away first, so a kill while deleting
    leaves no folder that looks complete."""
    steps = sorted((int(m.group(1)), p) for p in folder.glob("iter_*") if (m := STEP_DIR.fullmatch(p.name)))
    for _, path in steps[:-keep]:
        doomed = path.with_name(f".{path.name}.deleting")
        path.replace(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records of iterations after ``step`` (the resumed run writes them again)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line + "\n")
    write_text(path, "".join(kept))
