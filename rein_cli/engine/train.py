"""The training loop: iteration-based, read top to bottom (set up, loop, log, checkpoint, evaluate).

One process per device (``torchrun``, or ``rein train --devices N``); rank 0 alone writes. Every
``train.checkpoint_interval`` iterations ``checkpoints/iter_<N>/`` gets the weights and ``training_state.pt``
(optimizer, step, every random generator, the data position), from which ``train(..., resume=RUN)``
continues exactly where the run stopped (`rein_cli.engine.resume`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, Dataset

from rein_cli.config import Config, check_config, data_root, per_device_batch, to_dict
from rein_cli.data.catalog import locate
from rein_cli.data.dataset import SegmentationDataset, TrainingSampler, training_loader
from rein_cli.data.manifest import Manifest
from rein_cli.data.prepare import ensure_prepared
from rein_cli.data.transforms import TrainTransform
from rein_cli.engine import distributed as dist
from rein_cli.engine.checkpoint import init_from_checkpoint, read_checkpoint_config, save_checkpoint
from rein_cli.engine.compile import compile_segmentor
from rein_cli.engine.evaluate import evaluate
from rein_cli.engine.optim import build_optimizer, lr_at
from rein_cli.engine.resume import (
    clean_checkpoints,
    prune_checkpoints,
    restore_rng,
    resumable,
    resume_point,
    rng_state,
    training_state,
    truncate_metrics,
)
from rein_cli.engine.runs import RunDir, choose_run_dir, resolve_device, seed_everything
from rein_cli.engine.step import accumulate_gradients, autocast_dtype, out_of_memory
from rein_cli.errors import ReinError
from rein_cli.io import write_text
from rein_cli.models.backbone import backbone_spec
from rein_cli.models.methods import uses_rein_queries
from rein_cli.models.segmentor import Segmentor, build_segmentor, count_parameters
from rein_cli.progress import Progress

log = logging.getLogger(__name__)


def train(
    cfg: Config,
    out: Path | None = None,
    *,
    progress: bool = True,
    evaluate_after: bool = True,
    resume: Path | None = None,
    recipe: str | None = None,
) -> Path:
    """Train the model ``cfg`` describes; returns the run directory (`RunDir` says what it holds).

    ``config.yaml`` (resolved), ``metrics.jsonl`` (one line per log step and per evaluation),
    ``checkpoints/iter_<N>`` (the last ``train.keep_checkpoints`` step checkpoints, each with its training state),
    ``checkpoints/last`` (the latest weights), ``checkpoints/best`` (with ``train.eval_interval``: the highest mean
    mIoU) and, when ``cfg.data.eval`` names datasets, ``eval/``. ``resume``: a run directory to continue (``cfg`` may
    differ from its config only in `rein_cli.engine.resume.RESUMABLE` keys). ``recipe``: the recipe's name, recorded
    in every checkpoint's config.json (a resumed run keeps its own).
    """
    # ---- set up: processes, the run directory, the data, the model, the optimizer
    check_config(cfg)
    device = start_processes(cfg)
    main, world, accumulation = dist.is_main(), dist.world_size(), cfg.train.accumulation
    if not main:
        logging.getLogger("rein_cli").setLevel(logging.WARNING)  # one process speaks
    per_device_batch(cfg.data.batch_size, world, accumulation)
    autocast = autocast_dtype(cfg.train.precision, device)
    state, resumed_from = None, None
    if resume is not None:
        run = RunDir(resume)
        if out is not None and Path(out).resolve() != run.path.resolve():
            raise ReinError(f"--resume {run.path} continues that run in place; leave out --out {out}")
        resumed_from, state = resume_point(run, cfg)
        if resumed_from is not None:
            recipe = recipe or read_checkpoint_config(resumed_from).get("recipe")
    else:
        run = RunDir(dist.broadcast_object(choose_run_dir(out) if main else None))
    root = data_root(cfg.data)
    sources, targets, cfg = prepare_datasets(cfg, root, progress=progress)
    seed_everything(cfg.train.seed)
    model = build_model(cfg, sources[0], resumed_from=resumed_from, device=device)
    if cfg.train.compile:  # in place, before DDP wraps it: the same module, the same state-dict keys
        compile_segmentor(model, device)
    net = parallel(model, cfg, device)
    dataset = training_set(cfg, sources, model)
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
    best = None if state is None else state.get("best_mIoU")
    window: list[list[float]] = [] if state is None else [list(w) for w in state.get("window", [])]
    elapsed = 0.0 if state is None else float(state.get("time", 0.0))

    lock = contextlib.nullcontext()
    if main:  # only once the model and the data are known to be fine; held until the run ends
        lock = run.lock() if resume is not None else run.claim()
    with lock, resumable(run, max_iters):  # an interrupt or a full disk from now on names `rein train --resume RUN`
        if main:
            if resume is not None:
                clean_checkpoints(run.checkpoints)
                truncate_metrics(run.metrics, start)
            write_text(run.config, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
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
            if resume is not None:
                log.info("resuming %s at iteration %d of %d", run.path, start, max_iters)
        dist.barrier()
        board = tensorboard(run) if main else None
        model.train()
        if state is not None:  # last: everything above may draw from the generators
            restore_rng(state["rng"], device)
        loader = training_loader(dataset, sampler, num_workers=cfg.data.num_workers)
        start_time = time.perf_counter()
        with (
            open(run.metrics, "a") if main else contextlib.nullcontext() as metrics,
            Progress(max_iters, "training", bar=progress and main, leave=True, initial=start) as bar,
        ):
            # ---- the loop
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
                        write_record(metrics, record)
                        if board is not None:
                            board.add_scalar("train/loss", record["loss"], step + 1)
                            board.add_scalar("train/lr", lr, step + 1)
                    bar.set(loss=f"{record['loss']:.3f}", lr=f"{lr:.2e}")
                    window = []
                bar.update()
                done = step + 1
                periodic = cfg.train.eval_interval and done % cfg.train.eval_interval == 0
                if periodic and done < max_iters and targets:
                    with bar.paused():  # the evaluation shows its own progress; the steps' speed leaves it out
                        scores, mean = evaluate_run(model, cfg, targets, run.eval_dir(done), names, progress=progress)
                        info = checkpoint_info(cfg, names, recipe, done)
                        best = keep_best(model, run, cfg, done, scores, mean, best, info, metrics, board)
                if done % cfg.train.checkpoint_interval == 0 and done < max_iters:
                    seconds = elapsed + time.perf_counter() - start_time
                    info = checkpoint_info(cfg, names, recipe, done)
                    save_step(model, optimizer, run, cfg, done, info, device, best=best, window=window, seconds=seconds)

            # ---- the end: the last checkpoint, the evaluation
            seconds = elapsed + time.perf_counter() - start_time
            info = checkpoint_info(cfg, names, recipe, max_iters)
            save_step(model, optimizer, run, cfg, max_iters, info, device, best=best, window=window, seconds=seconds)
            seconds = elapsed + time.perf_counter() - start_time
            bar.close()  # training is over: the evaluation below reports its own progress
            log.info("trained %d iterations in %.0f s; checkpoint: %s", max_iters, seconds, run.checkpoint())
            if evaluate_after and targets:
                scores, mean = evaluate_run(model, cfg, targets, run.eval_dir(), names, progress=progress)
                keep_best(model, run, cfg, max_iters, scores, mean, best, info, metrics, board)
        if board is not None:
            board.close()
    dist.shutdown()
    return run.path


# ---- set-up ---------------------------------------------------------------------------------------------------


def start_processes(cfg: Config) -> torch.device:
    """This process's device; under torchrun, the process group joined (each process on its own GPU)."""
    device = resolve_device(cfg.train.device)
    if dist.init_from_env(device) and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank())
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = cfg.train.tf32
        torch.backends.cudnn.allow_tf32 = cfg.train.tf32
    return device


def prepare_datasets(cfg: Config, root: Path, *, progress: bool) -> tuple[list[Manifest], list[Manifest], Config]:
    """The training datasets and the evaluation datasets, each located once and prepared (rank 0 first; unknown
    names fail before anything is prepared), their classes checked against each other and the model's; ``cfg``
    with ``model.num_classes`` set from the training data when it was not."""
    main = dist.is_main()
    backbone_spec(cfg.model.backbone)  # unknown names fail now, before any data is prepared or model built
    train_located = [locate(name, root) for name in cfg.data.train]
    eval_located = [locate(name, root) for name in cfg.data.eval]
    if not main:
        dist.barrier()  # rank 0 prepares the data first
    sources = [ensure_prepared(found, root, progress=progress and main) for found in train_located]
    manifest = sources[0]  # the first source's classes and palette name the model's
    if cfg.model.num_classes is None:  # the head is sized to the training data's classes
        cfg = replace(cfg, model=replace(cfg.model, num_classes=len(manifest.classes)))
    for source in sources:
        if len(source.classes) != cfg.model.num_classes:
            raise ReinError(
                f"dataset {source.dataset} has {len(source.classes)} classes but model.num_classes is "
                f"{cfg.model.num_classes}; give --set model.num_classes={len(source.classes)}"
            )
        if source.classes != manifest.classes:
            raise ReinError(
                f"training datasets {manifest.dataset} and {source.dataset} name different classes; "
                "multi-source training needs one label space"
            )
    targets = []
    for found in eval_located:  # evaluation after training must be possible: known now, not after hours
        target = ensure_prepared(found, root, progress=progress and main)
        if len(target.classes) != cfg.model.num_classes:
            raise ReinError(
                f"evaluation dataset {target.dataset} has {len(target.classes)} classes but the model "
                f"{cfg.model.num_classes}; evaluate on datasets with the same classes, e.g. "
                f'--set "data.eval=[{manifest.dataset}]", or none with --set "data.eval=[]"'
            )
        targets.append(target)
    if main:
        dist.barrier()
    return sources, targets, cfg


def build_model(cfg: Config, manifest: Manifest, *, resumed_from: Path | None, device: torch.device) -> Segmentor:
    """The model ``cfg.model`` describes, with the training data's classes and palette, its weights from the step
    checkpoint being resumed or else ``train.init_from``, on ``device``."""
    model = build_segmentor(cfg.model, download=True, classes=manifest.classes, palette=manifest.palette)
    if resumed_from is not None:
        init_from_checkpoint(model, resumed_from)
    elif cfg.train.init_from:
        init_from_checkpoint(model, cfg.train.init_from)
        log.info("initialised from %s", cfg.train.init_from)
    model.backbone.checkpointing = cfg.train.checkpointing
    return model.to(device)


def training_set(cfg: Config, sources: list[Manifest], model: Segmentor) -> Dataset:
    """The training split of every source with the training augmentation, concatenated (the official multi-source
    wrapper)."""
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
    return parts[0] if len(parts) == 1 else ConcatDataset(parts)


def parallel(model: Segmentor, cfg: Config, device: torch.device) -> torch.nn.Module:
    """The module the loop calls: ``model`` itself in one process, else wrapped in DDP (SyncBatchNorm on CUDA)."""
    if dist.world_size() == 1:
        return model
    # the fpn and semfpn heads ignore the Rein queries: with the link on, their projection gets no gradient
    unused = cfg.model.head != "mask2former" and uses_rein_queries(cfg.model)
    ids = [device.index] if device.type == "cuda" else None
    if device.type == "cuda":  # batch statistics over every GPU's images (mmseg's SyncBN); CUDA only
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place for a Segmentor
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused)


def tensorboard(run: RunDir):
    """A TensorBoard writer into the run's ``tensorboard/``, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard logging off (pip install tensorboard to turn it on); metrics.jsonl has everything")
        return None
    return SummaryWriter(str(run.tensorboard))


# ---- records, checkpoints, evaluation -----------------------------------------------------------------------------


def write_record(metrics: IO[str], record: dict[str, Any]) -> None:
    """One line of metrics.jsonl, flushed (a killed run keeps every line written before)."""
    metrics.write(json.dumps(record) + "\n")
    metrics.flush()


def checkpoint_info(cfg: Config, names: list[str], recipe: str | None, step: int) -> dict[str, Any]:
    """What a checkpoint of the run records besides the model: the training datasets, the iterations trained, the
    recipe's name, the published figures of the setting."""
    info: dict[str, Any] = {"trained_on": " + ".join(names), "training_datasets": names, "iterations": step}
    info |= {"recipe": recipe} if recipe else {}
    return info | ({"reported": to_dict(cfg.reported)} if cfg.reported else {})


def save_step(
    model: Segmentor,
    optimizer: torch.optim.Optimizer,
    run: RunDir,
    cfg: Config,
    step: int,
    info: dict[str, Any],
    device: torch.device,
    *,
    best: float | None,
    window: list[list[float]],
    seconds: float,
) -> None:
    """``checkpoints/last``, then the step checkpoint (weights and training state); rank 0 writes, the others
    wait. Only the newest ``train.keep_checkpoints`` step checkpoints stay."""
    rng = dist.gather_objects(rng_state(device))
    if dist.is_main():
        state = training_state(cfg, step, optimizer, rng, best=best, window=window, seconds=seconds)
        save_checkpoint(model, run.checkpoint(), info=info)
        save_checkpoint(model, run.step_checkpoint(step), info=info, training_state=state)
        prune_checkpoints(run, cfg.train.keep_checkpoints)
    dist.barrier()


def evaluate_run(
    model: Segmentor, cfg: Config, targets: list[Manifest], out: Path, names: list[str], *, progress: bool
) -> tuple[dict[str, float], float]:
    """Every process evaluates its share of the targets (rank 0 writes the report into ``out``); the training
    datasets (``names``) never enter the mean. Returns the mIoU per dataset and the mean."""
    result = evaluate(
        model,
        targets,
        out=out,
        data_dir=data_root(cfg.data),
        mode=cfg.eval.mode,
        stride=cfg.eval.stride,
        flip=cfg.eval.flip,
        window_batch=cfg.eval.window_batch,
        precision=cfg.eval.precision,
        compile=cfg.eval.compile,
        progress=progress,
        trained_on=names,
        reported=cfg.reported,
    )
    return {name: entry.mIoU for name, entry in result.datasets.items()}, result.mean_mIoU


def keep_best(
    model: Segmentor,
    run: RunDir,
    cfg: Config,
    step: int,
    scores: dict[str, float],
    mean: float,
    best: float | None,
    info: dict[str, Any],
    metrics: IO[str] | None,
    board: Any,
) -> float | None:
    """Every evaluation (periodic and final) recorded in metrics.jsonl and on TensorBoard; with periodic evaluation
    (``train.eval_interval``) ``checkpoints/best`` replaced when the mean is the highest so far. Returns the best
    mean so far."""
    if dist.is_main():
        write_record(metrics, {"step": step, "eval": scores, "mean_mIoU": mean})
        if board is not None:
            for name, value in scores.items():
                board.add_scalar(f"eval/{name}", value, step)
            board.add_scalar("eval/mean_mIoU", mean, step)
        if cfg.train.eval_interval and (best is None or mean > best):
            best = mean
            extra = {"mean_mIoU": best, "eval": scores}
            save_checkpoint(model, run.checkpoint("best"), info=info | extra)
            log.info("iteration %d: mean mIoU %.2f, the best so far (checkpoints/best)", step, best)
    dist.barrier()
    return best
