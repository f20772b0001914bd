"""torch.distributed in a few functions: one process per device, started by ``torchrun``; rank 0 alone writes.

Without ``torchrun`` (no ``WORLD_SIZE`` in the environment) everything here is the one-process answer, so the
same code runs on one device and on many.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def local_rank() -> int:
    """This process's device index on its node (``LOCAL_RANK``, set by torchrun)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0: the one process that writes files and logs."""
    return rank() == 0


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", 1)) > 1


def under_torchrun() -> bool:
    """Started by torchrun (with any number of processes)."""
    return "WORLD_SIZE" in os.environ


def launch_rank() -> int:
    """The rank torchrun gave this process (``RANK``; 0 without torchrun), also once the process group is gone."""
    return int(os.environ.get("RANK", 0))


def init_from_env(device: torch.device) -> bool:
    """Join the process group torchrun describes (NCCL on CUDA, gloo elsewhere); False when not launched."""
    if not launched():
        return False
    if not is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank())
        # rank 0 evaluates alone while the others wait at a barrier: a long evaluation must not time them out
        timeout = datetime.timedelta(hours=2)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return True


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the processes, in place (unchanged in one process)."""
    if is_initialized():
        dist.all_reduce(tensor)
    return tensor


def broadcast_object(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object), on every process."""
    if not is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every process's ``value``, in rank order, on every process (``[value]`` in one process)."""
    if not is_initialized():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def shutdown() -> None:
    if is_initialized():
        dist.destroy_process_group()
