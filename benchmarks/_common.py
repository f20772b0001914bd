"""Helpers shared by the benchmark scripts: the processor's name, device synchronisation, the JSON written whole."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import torch


def cpu_name() -> str:
    """The processor's model name (Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def save_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed over it: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
