"""What every run needs before it starts: the device, the seeds, and a run directory that is never overwritten."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from rein_cli.errors import ReinError

LOCK_FILE = ".lock"  # in a run directory: who holds it (a pid), locked with flock while the run lives


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``; an error when CUDA is asked for but absent."""
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
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def choose_run_dir(path: Path | None, base: Path = Path("runs"), name: str = "train") -> Path:
    """``path`` if it is new or empty (else an error); without one, the first free runs/train, runs/train-2, ..."""
    if path is not None:
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(p.name != LOCK_FILE for p in path.iterdir())):
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


def claim_run_dir(path: Path) -> RunLock:
    """Create the run directory and claim it; it must hold nothing yet (but an old lock file)."""
    make_dir(path)
    lock = RunLock(path)
    if any(p.name != LOCK_FILE for p in path.iterdir()):
        lock.release()
        raise ReinError(f"output directory {path} already exists and is not empty; choose another --out")
    return lock
