"""`rein train --devices N`: every check that can be made before a process starts, then N processes on this machine
under torch's elastic launcher (what ``torchrun --standalone`` runs), run in this process so that however they end,
the command ends in one line.

Each process writes the line of its failure into a folder of this launch (`record_failure`) rather than on the
terminal; the launcher prints the one that came first (the cause; the others are the processes it stopped), with
its traceback when it is a bug. Under a ``torchrun`` started by hand, processes other than rank 0 print no line for
an expected failure (rank 0 says it); bugs are printed by every process.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rein_cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, Failure, ReinError, interrupted

if TYPE_CHECKING:
    from rein_cli.config import Config

log = logging.getLogger(__name__)
FAILURES = "REIN_FAILURES"  # the environment variable naming the folder where the processes record their failure


def check_launch(cfg: Config, devices: int, *, out: Path | None, resume: Path | None, progress: bool) -> Path:
    """What `rein train --devices N` checks before any process starts: the settings, that the machine has N
    devices, that the batch divides, the datasets (prepared, or the synthetic ones generated now), and the run
    folder (new or empty, or the run to resume). Returns the run folder."""
    from rein_cli.config import check_config, data_root, per_device_batch
    from rein_cli.engine.resume import resume_point
    from rein_cli.engine.runs import RunDir, choose_run_dir, resolve_device
    from rein_cli.engine.train import prepare_datasets

    check_config(cfg)
    check_devices(devices, resolve_device(cfg.train.device))
    per_device_batch(cfg.data.batch_size, devices, cfg.train.accumulation)
    prepare_datasets(cfg, data_root(cfg.data), progress=progress)
    if resume is not None:
        run = RunDir(resume)
        if out is not None and Path(out).resolve() != run.path.resolve():
            raise ReinError(f"--resume {run.path} continues that run in place; leave out --out {out}")
        resume_point(run.check("--resume"), cfg)
        return run.path
    return choose_run_dir(out)


def check_devices(devices: int, device) -> None:
    """An error when this machine cannot give each of ``devices`` processes a device of the kind ``device`` is."""
    import torch

    if device.type == "cuda":
        count = torch.cuda.device_count()
        if devices > count:
            raise ReinError(
                f"--devices {devices}: this machine has {count} GPU(s); give --devices {count} or fewer (one process "
                "per GPU), or add steps with train.accumulation to train with the same global batch on fewer"
            )
        return
    if device.type != "cpu":
        raise ReinError(f"--devices {devices}: one process per CUDA GPU or CPU core; {device.type} has no such launch")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if devices > cores:
        raise ReinError(
            f"--devices {devices}: training runs on the CPU here (no GPU), which has {cores} core(s) for this "
            f"command; give --devices {cores} or fewer (one process per core at least), or train on a machine with "
            "GPUs"
        )


def launch_training(argv: Sequence[str], devices: int, run: Path, max_iters: int) -> int:
    """Run the command line ``argv`` (the arguments after ``rein``) in ``devices`` processes on this machine,
    ``--devices`` left out and ``--out RUN`` added when not given (``run``: the run folder `check_launch` chose);
    prints one line for a failure and returns the exit code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    args = _without_devices(argv)
    named = any(a in ("--out", "-o", "--resume") or a.startswith(("--out=", "--resume=")) for a in args)
    args = args if named else [*args, "--out", str(run)]  # the folder the launcher checked, for every process
    log.info(
        "starting %d processes: torchrun --standalone --nproc-per-node=%d -m rein_cli %s",
        devices,
        devices,
        shlex.join(args),
    )
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=devices,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.5,
    )
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: N processes must not each take every core
    level = os.environ.get("LOGLEVEL")
    with tempfile.TemporaryDirectory(prefix="rein-launch-") as folder:
        os.environ[FAILURES] = folder
        _quiet_launcher()
        try:
            elastic_launch(config, sys.executable)("-u", "-m", "rein_cli", *args)
        except ChildFailedError as err:  # a process's own failure first; else one that ended without a word
            found = _crash(err, devices, killed_only=True) or _first_failure(Path(folder), stopped=False)
            return _report(found or _crash(err, devices) or _first_failure(Path(folder)) or _unknown(err))
        except (SignalException, KeyboardInterrupt):
            first = _first_failure(Path(folder), rank=0)
            return _report(first or (Failure(_interrupted(run, max_iters, devices), EXIT_INTERRUPTED), ""))
        finally:
            os.environ.pop(FAILURES, None)
            if level is None:
                os.environ.pop("LOGLEVEL", None)
            else:
                os.environ["LOGLEVEL"] = level
    return 0


def record_failure(failure: Failure, traceback: str) -> bool:
    """In a process of `launch_training`: record ``failure`` (and the ``traceback`` of a bug) for the launcher to
    print, rather than print it here. False when not started by `launch_training`."""
    folder = os.environ.get(FAILURES)
    if not folder or not Path(folder).is_dir():
        return False
    rank = int(os.environ.get("RANK", 0))
    record = {
        "rank": rank,
        "time": time.time(),
        "message": failure.message,
        "code": failure.code,
        "traceback": traceback if failure.bug else "",
    }
    tmp = Path(folder) / f".rank{rank}.json"
    tmp.write_text(json.dumps(record))
    tmp.replace(Path(folder) / f"rank{rank}.json")
    return True


def quiet_rank() -> bool:
    """Under torchrun, a process other than rank 0: it prints no line for an expected failure (rank 0 does)."""
    return "WORLD_SIZE" in os.environ and int(os.environ.get("RANK", 0)) != 0


# ---- the launcher's side


def _without_devices(argv: Sequence[str]) -> list[str]:
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--devices":
            skip = True
        elif not arg.startswith("--devices="):
            args.append(arg)
    return args


def _quiet_launcher() -> None:
    """The elastic agent's own log lines (a stopped process, its exit code, its closing signals) off the terminal:
    the failure is told in one line."""
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ["LOGLEVEL"] = "CRITICAL"  # for the launcher's loggers made from now on


def _first_failure(folder: Path, rank: int | None = None, stopped: bool = True) -> tuple[Failure, str] | None:
    """The failure recorded first (a stopped process's "interrupted" only when nothing else failed, and not at all
    without ``stopped``); ``rank``: only that process's."""
    records = []
    for path in folder.glob("rank*.json"):
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    records = [r for r in records if (rank is None or r["rank"] == rank) and (stopped or r["code"] != EXIT_INTERRUPTED)]
    if not records:
        return None
    first = min(records, key=lambda r: (r["code"] == EXIT_INTERRUPTED, r["time"]))
    return Failure(first["message"], first["code"], bug=bool(first["traceback"])), first["traceback"]


def _crash(err, devices: int, *, killed_only: bool = False) -> tuple[Failure, str] | None:
    """A process that ended without recording why: killed by a signal (the kernel's out-of-memory killer), which
    is the cause whatever the others then said, or (not ``killed_only``) crashed. ``killed_only`` counts SIGKILL
    alone (the kernel's): the launcher itself stops the other processes with SIGTERM once one has failed."""
    killed = {rank: f for rank, f in err.failures.items() if f.exitcode < 0 and (f.exitcode == -9 or not killed_only)}
    crashed = killed or {rank: f for rank, f in err.failures.items() if f.exitcode != EXIT_INTERRUPTED}
    if not killed and (killed_only or not crashed):
        return None
    rank, failure = min(crashed.items(), key=lambda item: item[1].timestamp)
    code = failure.exitcode
    how = f"was killed by signal {-code}" if code < 0 else f"ended with exit code {code}"
    return Failure(
        f"process {rank} of {devices} {how} without a word (most often for lack of memory: the kernel's log, "
        "`dmesg`, says); lower data.batch_size or data.num_workers, or use fewer --devices",
        EXIT_ERROR,
    ), ""


def _unknown(err) -> tuple[Failure, str]:
    return Failure(f"the processes failed without a word ({err.name}); rerun with --debug", EXIT_ERROR), ""


def _interrupted(run: Path, max_iters: int, devices: int) -> str:
    from rein_cli.engine.resume import how_to_continue
    from rein_cli.engine.runs import RunDir

    if not RunDir(run).is_run():  # stopped before the run folder was made: the same command starts it
        return interrupted()
    return interrupted(how_to_continue(RunDir(run), max_iters, world=devices))


def _report(found: tuple[Failure, str]) -> int:
    failure, traceback = found
    prefix = "" if failure.code == EXIT_INTERRUPTED else "error: "
    print(prefix + failure.message, file=sys.stderr)
    if traceback:
        print(traceback, end="", file=sys.stderr)
    return failure.code
