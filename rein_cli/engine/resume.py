"""Exact resume: what a step checkpoint keeps besides the weights (optimizer, step, every random generator, the
data position, the best score so far), which settings a resumed run may change, and the run directory's repair
(half-written checkpoints removed, metrics after the step dropped, old step checkpoints pruned)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from rein_cli.config import Config
from rein_cli.documents import Fields, load_yaml
from rein_cli.engine import distributed as dist
from rein_cli.engine.checkpoint import CONFIG_FILE, TRAINING_STATE_FILE, load_training_state
from rein_cli.engine.runs import RunDir
from rein_cli.errors import DISK_FULL, Advice, Interrupted, ReinError, os_error, os_message
from rein_cli.io import write_text

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
    "train.compile",  # the same computation, only its speed (float sums may differ in order)
    "eval.compile",
    "eval.window_batch",  # how many windows per model call: the same scores
    "eval.precision",  # what the evaluations run in, not the training
)
STATE_FORMAT = 1


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


def training_state(
    cfg: Config,
    step: int,
    optimizer: torch.optim.Optimizer,
    rng: list[dict[str, Any]],
    *,
    best: float | None,
    window: list[list[float]],
    seconds: float,
) -> dict[str, Any]:
    """What ``training_state.pt`` holds: the optimizer, the step, every process's generators (``rng``), the best
    mean mIoU so far, the loss terms since the last log line, the training time, the settings' hash."""
    return {
        "format": STATE_FORMAT,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "rng": rng,
        "best_mIoU": best,
        "window": window,
        "time": seconds,
        "config_hash": config_hash(cfg),
        "world_size": dist.world_size(),
    }


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


def run_settings(run: RunDir) -> dict[str, Any]:
    """A run's ``config.yaml``; an error for a folder that is not a run of `rein train`."""
    run.check("--resume")
    try:
        saved = load_yaml(run.config.read_text(encoding="utf-8"), str(run.config))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ReinError(f"{run.config} is not valid YAML: {' '.join(str(err).split())}") from err
    if not isinstance(saved, dict):
        raise ReinError(f"{run.config} is not a run configuration; give a run directory of `rein train`")
    return saved


def resume_point(run: RunDir, cfg: Config) -> tuple[Path | None, dict[str, Any] | None]:
    """The newest complete step checkpoint of ``run`` and its training state, after checking that ``cfg`` differs
    from the run's ``config.yaml`` only in `RESUMABLE` keys; (None, None) for a run stopped before its first."""
    ours, theirs = flat_config(cfg), flat_config(run_settings(run))
    changed = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k) and k not in RESUMABLE)
    if changed:
        details = ", ".join(f"{k} ({theirs.get(k)!r} -> {ours.get(k)!r})" for k in changed[:5])
        raise ReinError(
            f"--resume {run.path}: the settings differ from the run's config.yaml in {details}; a resumed run may "
            f"change only {', '.join(RESUMABLE)}; start a new run to change the others"
        )
    steps = [
        (step, path)
        for step, path in run.step_checkpoints()
        if (path / TRAINING_STATE_FILE).is_file() and (path / CONFIG_FILE).is_file()
    ]
    if not steps:  # stopped before its first checkpoint: it starts again, in place, with its own settings
        return None, None
    read_metrics(run.metrics)  # checked now, before the model is built
    step, path = steps[-1]
    state = load_training_state(path)
    if state.get("format") != STATE_FORMAT or state["step"] != step:
        raise ReinError(f"{path / TRAINING_STATE_FILE} does not match its folder; resume from an earlier checkpoint")
    if state.get("config_hash") != config_hash(cfg):
        raise ReinError(f"{path} was saved with other settings than {run.config}; the run directory was edited")
    if step >= cfg.train.max_iters and step > 0 and (run.results.is_file() or not cfg.data.eval):
        raise ReinError(
            f"--resume {run.path}: the run already reached iteration {step}; give --iters beyond it to train further"
        )
    return path, state  # a run trained to its end but not evaluated goes on with its evaluation


def how_to_continue(run: RunDir, max_iters: int, world: int | None = None) -> str:
    """What goes on with an interrupted run (it completes "interrupted; ..."): `rein train --resume RUN`, with the
    ``world`` processes it ran on (default: this one's), and where it goes on from."""
    command = f"rein train --resume {shlex.quote(str(run.path))}"
    world = world or dist.world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    if world > 1 and local == world:  # one machine: `rein train --devices N` starts the processes
        command += f" --devices {world}"
    command = f"`{command}`" + (" under torchrun, as the run was started" if local != world else "")
    steps = [step for step, path in run.step_checkpoints() if (path / TRAINING_STATE_FILE).is_file()]
    if not steps:
        return f"start the run again in its folder with {command} (it stopped before its first checkpoint)"
    if steps[-1] >= max_iters:
        return f"finish the run (its evaluation after training) with {command}"
    return f"continue the run with {command} (from its checkpoint of iteration {steps[-1]})"


@contextlib.contextmanager
def resumable(run: RunDir, max_iters: int) -> Iterator[None]:
    """Around a run's work once its folder exists: Ctrl-C, SIGTERM and a full disk end with the command that
    continues the run (`how_to_continue`), in the line the command line prints."""
    try:
        yield
    except KeyboardInterrupt as err:
        if not run.is_run():
            raise
        raise Interrupted(how_to_continue(run, max_iters)) from err
    except Exception as err:
        code, filename = os_error(err)
        if code not in DISK_FULL or not run.is_run():
            raise
        raise ReinError(os_message(code, filename, Advice(again=how_to_continue(run, max_iters)))) from err


def clean_checkpoints(folder: Path) -> None:
    """Remove what a killed run left half-written: temporary and half-deleted checkpoint folders."""
    for path in folder.glob(".iter_*"):
        shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(run: RunDir, keep: int) -> None:
    """Keep the newest ``keep`` step checkpoints; each older one is renamed away first, so a kill while deleting
    leaves no folder that looks complete."""
    for _, path in run.step_checkpoints()[:-keep]:
        doomed = path.with_name(f".{path.name}.deleting")
        path.replace(doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def read_metrics(path: Path) -> list[tuple[str, int]]:
    """(line, its step) for each record of a run's metrics.jsonl, each checked: a JSON object whose ``step`` is a
    whole number. Only the last line may be cut short (by a kill): it is left out. [] without the file."""
    if not path.is_file():
        return []
    advice = "correct that line or delete it, then resume again (the resumed run writes the records after its step)"
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if n == len(lines):  # the line a kill cut short
                continue
            raise ReinError(f"{path}, line {n}: not a JSON record ({err.msg}); {advice}") from None
        step = Fields.of(record, f"{path}, line {n}", advice).integer("step")
        records.append((line, step))
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records of iterations after ``step`` (the resumed run writes them again)."""
    if path.is_file():
        write_text(path, "".join(line + "\n" for line, at in read_metrics(path) if at <= step))
