"""Inference precision: whether a device multiplies bfloat16 natively, and what ``eval.precision`` (``--precision``)
auto, bf16 or fp32 then runs, with the line that says so. Training has its own, ``train.precision`` (step.py)."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

from rein_cli.config import Precision, check_choice

# auto on a CPU with native bf16 (x86 avx512_bf16 or amx_bf16): True runs bf16 autocast there, False float32. The one
# switch of that choice (benchmarks/precision_speed.py measures both); GPUs with bf16 always run it under auto.
CPU_AUTO_BF16 = True
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that multiply bf16 natively
X86 = ("x86_64", "amd64", "i386", "i686", "x86")


@dataclass(frozen=True)
class InferencePrecision:
    """What inference runs in: ``dtype`` the autocast type (None: float32), ``why`` the reason, said in one log line,
    and ``warn`` when it is not what was asked for."""

    dtype: torch.dtype | None
    why: str
    warn: bool = False

    @property
    def name(self) -> str:
        """bf16 or fp32: what results.json records."""
        return "bf16" if self.dtype is not None else "fp32"

    def __str__(self) -> str:
        return f"precision: {'bf16 autocast' if self.dtype is not None else 'fp32'} ({self.why})"


def cpu_native_bf16() -> bool | None:
    """Whether this CPU multiplies bf16 natively: on x86 the `CPU_BF16_FLAGS` (from torch's cpuinfo, else
    /proc/cpuinfo); None where rein cannot tell (other architectures, e.g. arm64 and Apple silicon)."""
    if platform.machine().lower() not in X86:
        return None
    get = getattr(getattr(torch, "cpu", None), "get_capabilities", None)  # torch >= 2.9
    if get is not None:
        try:
            capabilities = get()
            return any(bool(capabilities.get(flag)) for flag in CPU_BF16_FLAGS)
        except (RuntimeError, AttributeError, TypeError):
            pass
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    flags = {word for line in text.splitlines() if line.startswith("flags") for word in line.split()}
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def cuda_native_bf16(device: torch.device) -> bool:
    """Whether the GPU computes bf16 natively (Ampere and later), not by emulation."""
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # an older torch: no emulation to tell apart
        return bool(torch.cuda.is_bf16_supported())


def inference_precision(precision: str, device: torch.device) -> InferencePrecision:
    """What inference on ``device`` runs in for ``precision``: fp32 as asked; auto: bf16 autocast where the device
    has native bf16 (a CPU's only with `CPU_AUTO_BF16`), else fp32; bf16: bf16 autocast, except on a device known to
    lack native bf16, which runs fp32 and says so (``warn``)."""
    check_choice("precision", precision, Precision)
    device = torch.device(device)
    if precision == "fp32":
        return InferencePrecision(None, "as asked")
    if device.type == "cuda":
        native, where = cuda_native_bf16(device), str(device)
    elif device.type == "cpu":
        native, where = cpu_native_bf16(), "the CPU"
    else:
        native, where = None, str(device)
    if native is False:
        if precision == "auto":
            return InferencePrecision(None, f"{where} has no native bf16")
        return InferencePrecision(None, f"bf16 was asked for, but {where} has no native bf16, so fp32 is faster", True)
    if native is None:
        if precision == "auto":
            return InferencePrecision(None, f"rein cannot tell whether {where} has native bf16; --precision bf16 tries")
        return InferencePrecision(torch.bfloat16, f"as asked; rein cannot tell whether {where} has native bf16")
    if precision == "auto" and device.type == "cpu" and not CPU_AUTO_BF16:
        return InferencePrecision(None, "auto keeps the CPU in fp32; --precision bf16 uses its native bf16")
    return InferencePrecision(torch.bfloat16, f"{where} has native bf16")
