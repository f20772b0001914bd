"""One optimisation step's work: gradients accumulated over micro-batches under autocast, the loss in float32, and
what to change when a step runs out of memory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

import torch
from torch.nn.parallel import DistributedDataParallel

from rein_cli.config import Config
from rein_cli.errors import ReinError
from rein_cli.models.segmentor import Segmentor, as_float


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
            losses = model.head.loss(as_float(outputs), labels)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise ReinError(
                    f"the loss became {loss.item()} at iteration {step}; lower optim.lr or check the labels"
                )
            (loss / accumulation).backward()
        for key, value in {"loss": loss, **losses}.items():
            totals[key] = totals.get(key, 0.0) + value.item() / accumulation
    return totals


def out_of_memory(cfg: Config, per_device: int) -> str:
    fixes = [f"lower data.batch_size (now {cfg.data.batch_size}, {per_device} per device per step)"]
    fixes.append(f"raise train.accumulation (now {cfg.train.accumulation})")
    if not cfg.train.checkpointing:
        fixes.append("enable train.checkpointing=true")
    fixes.append(f"lower model.crop_size (now {cfg.model.crop_size})")
    return "out of GPU memory during training; " + ", ".join(fixes) + " (with --set)"
