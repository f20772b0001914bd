"""What every run needs before it starts: the device, the seeds, and the run directory (`RunDir`, its layout in one
place) that is never overwritten."""

from __future__ import annotations

import os
import random
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rein_cli.engine.results import RESULTS_FILE
from rein_cli.errors import ReinError
from rein_cli.io import check_folder

if TYPE_CHECKING:
    import torch

LOCK_FILE = ".lock"  # in a run directory: who holds it (a pid), locked with flock while the run lives
STEP_DIR = re.compile(r"iter_(\d+)")  # a step checkpoint's folder, and a periodic evaluation's


@dataclass(frozen=True)
class RunDir:
    """A training run's directory: the resolved ``config.yaml``, ``metrics.jsonl`` (a line per log step and per
    evaluation), ``checkpoints/`` (``last``, ``best``, ``iter_<N>`` with their training state), ``eval/`` (the final
    evaluation; ``eval/iter_<N>`` the periodic ones), ``tensorboard/`` and the lock file of the live run; later
    ``eval-<NAME>/``, `rein eval` of ``checkpoints/<NAME>`` (never the run's own ``eval/``)."""

    path: Path

    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    CHECKPOINTS = "checkpoints"
    EVAL = "eval"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    def checkpoint(self, name: str = "last") -> Path:
        """``checkpoints/<name>``: ``last``, ``best`` or ``iter_<N>``."""
        return self.checkpoints / name

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoint(f"iter_{step}")

    def step_checkpoints(self) -> list[tuple[int, Path]]:
        """``(step, folder)`` of every ``checkpoints/iter_<N>``, by step."""
        found = ((STEP_DIR.fullmatch(p.name), p) for p in self.checkpoints.glob("iter_*"))
        return sorted((int(m.group(1)), p) for m, p in found if m)

    def eval_dir(self, step: int | None = None) -> Path:
        """``eval/`` (the evaluation after training), or ``eval/iter_<N>`` (a periodic one)."""
        return self.path / self.EVAL if step is None else self.path / self.EVAL / f"iter_{step}"

    def checkpoint_eval_dir(self, name: str) -> Path:
        """``eval-<name>``: where `rein eval` of ``checkpoints/<name>`` writes by default, beside ``eval/``."""
        return self.path / f"{self.EVAL}-{name}"

    @property
    def results(self) -> Path:
        """The final evaluation's results.json."""
        return self.eval_dir() / RESULTS_FILE

    def periodic_results(self) -> list[Path]:
        return sorted(self.eval_dir().glob(f"iter_*/{RESULTS_FILE}"))

    def is_run(self) -> bool:
        """Whether the folder is a run of `rein train` (it has its config.yaml)."""
        return self.config.is_file()

    @classmethod
    def of_checkpoint(cls, folder: Path | str) -> RunDir | None:
        """The run a checkpoint folder was saved in (``RUN/checkpoints/NAME``), or None for any other folder."""
        folder = Path(folder).resolve()
        run = cls(folder.parent.parent)
        return run if folder.parent.name == cls.CHECKPOINTS and run.is_run() else None

    def check(self, option: str = "--resume") -> RunDir:
        """This run, or an error naming ``option`` when the folder is not a run of `rein train`."""
        if not self.path.is_dir() or not self.is_run():
            raise ReinError(
                f"{option} {self.path}: not a training run (no {self.CONFIG}); give a run directory of `rein train`"
            )
        return self

    def lock(self) -> RunLock:
        """Claim this existing run for the life of this process."""
        return RunLock(self.path)

    def claim(self) -> RunLock:
        """Create the run directory and claim it; it must hold nothing yet (but an old lock file)."""
        make_dir(self.path)
        lock = RunLock(self.path)
        if any(p.name != LOCK_FILE for p in self.path.iterdir()):
            lock.release()
            raise ReinError(f"output directory {self.path} already exists and is not empty; choose another --out")
        return lock


def default_eval_dir(checkpoint: str | Path | None, name: str | None = None) -> Path:
    """Where `rein eval` writes without --out: ``RUN/eval-NAME`` for a run's checkpoint ``RUN/checkpoints/NAME`` (the
    run's own ``RUN/eval``, written by training, is left as it is), ``eval/NAME`` beside any other checkpoint folder
    (so that two checkpoints never share one), and ``eval/NAME`` here for a model given by name or on the Hub."""
    from rein_cli.hub import parse_hf_uri

    hub = parse_hf_uri(str(checkpoint)) if checkpoint is not None else None
    if checkpoint is None or hub is not None:
        return Path("eval") / (name or (hub[0].replace("/", "--") if hub else "model"))
    run = RunDir.of_checkpoint(checkpoint)
    folder = Path(checkpoint).resolve()
    if run is not None:
        return run.checkpoint_eval_dir(folder.name)
    return folder.parent / "eval" / folder.name


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; an error when CUDA is asked for but absent."""
    import torch

    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ReinError(f'unknown device "{name}"; use auto, cpu, cuda or cuda:N') from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ReinError(f"device {name} requested but CUDA is not available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_run_dir(path: Path | None, base: Path = Path("runs"), name: str = "train") -> Path:
    """``path`` if it is new or empty (else an error); without one, the first free runs/train, runs/train-2, ..."""
    if path is not None:
        path = Path(path)
        check_folder(path)
        if path.exists() and (not path.is_dir() or any(p.name != LOCK_FILE for p in path.iterdir())):
            if RunDir(path).is_run():
                raise ReinError(
                    f"output directory {path} holds a run of `rein train`: continue it with `rein train --resume "
                    f"{shlex.quote(str(path))}` (a finished one with --iters beyond its end), or choose another --out"
                )
            raise ReinError(f"output directory {path} already exists and is not empty; choose another --out")
        return path
    path, n = base / name, 1
    while path.exists():
        n += 1
        path = base / f"{name}-{n}"
    return path


def make_dir(path: Path) -> None:
    check_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ReinError(f"cannot create output directory {path}: {err.strerror}; choose another --out") from err


class RunLock:
    """An exclusive claim on a run directory for as long as this process lives: a second live run into the same
    folder is refused, while a killed run's claim goes with its process (the kernel drops ``flock`` locks)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # no flock on this platform: runs are not claimed
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ReinError(
                f"{folder} is in use by another run (pid {holder}); wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
