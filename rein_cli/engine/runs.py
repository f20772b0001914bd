"""What every run needs before it starts: the device, the seeds, and a run directory that is never overwritten."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from rein_cli.errors import ReinError


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
