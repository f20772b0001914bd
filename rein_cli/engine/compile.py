"""Optional ``torch.compile`` of a segmentor (``train.compile``, ``eval.compile``, ``--compile``): compiled in place,
so the model keeps its state-dict keys, and run uncompiled, after one line saying why, when compiling is not
possible (no C++ compiler for Inductor on the CPU) or fails."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

BACKEND = "inductor"  # torch.compile's default; tests swap in "eager" (tracing only) where the speed is not the point


def compiler_problem(device: torch.device) -> str | None:
    """Why Inductor cannot compile for ``device``, or None: on the CPU it builds C++ and needs a compiler (``$CXX``
    or g++); a GPU's missing Triton shows at the first call instead."""
    if device.type != "cpu" or BACKEND != "inductor":
        return None
    try:
        from torch._inductor import cpp_builder, exc
    except ImportError:  # a torch without these internals: let the first call tell
        return None
    try:
        cpp_builder.get_cpp_compiler()
    except exc.InvalidCxxCompiler:
        return "no C++ compiler found for Inductor on the CPU (install g++, or set CXX)"
    except Exception:  # the search itself failed in a way torch does not name: let the first call tell
        return None
    return None


def compile_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a failed compilation (tracing, Inductor, the C++ build), as opposed to the model's own."""
    from torch._dynamo.exc import TorchDynamoException

    errors: list[type[BaseException]] = [TorchDynamoException]
    with contextlib.suppress(ImportError):
        from torch._inductor.exc import CppCompileError

        errors.append(CppCompileError)
    return tuple(errors)


def compile_segmentor(model: nn.Module, device: torch.device) -> bool:
    """Compile ``model``'s forward in place (``nn.Module.compile``, ``dynamic=False``): the same module with the same
    state-dict keys (no ``_orig_mod.`` prefix), so checkpoints move freely between compiled and uncompiled runs.

    Compilation happens at the first call of each input shape (and again for no-grad calls). When it cannot happen
    (`compiler_problem`) or fails, one warning says so and the model runs uncompiled. Returns whether it is
    compiled (for now: a failure at a later call still turns it off)."""
    problem = compiler_problem(device)
    if problem is not None:
        log.warning("torch.compile is off: %s; running uncompiled", problem)
        return False
    model.compile(dynamic=False, backend=BACKEND)
    log.info("torch.compile: the model compiles at its first calls (minutes on a CPU)")
    compiled = model._compiled_call_impl
    errors = compile_errors()

    def call(*args, **kwargs):
        try:
            return compiled(*args, **kwargs)
        except errors as err:
            cause = getattr(err, "inner_exception", None) or err  # the backend's own (Inductor, the C++ build)
            reason = (str(cause).strip().splitlines() or ["no message"])[0][:200]
            log.warning("torch.compile failed (%s: %s); running uncompiled", type(cause).__name__, reason)
            model._compiled_call_impl = None
            return model._call_impl(*args, **kwargs)

    model._compiled_call_impl = call
    return True


def is_compiled(model: nn.Module) -> bool:
    return getattr(model, "_compiled_call_impl", None) is not None


def compile_for(model: nn.Module, device: torch.device, on: bool = True) -> Callable[[], None]:
    """Compile ``model`` for a while (``on``; one already compiled stays as it is); returns what puts it back as it
    was: an evaluation during training compiles for itself without changing how the training steps run."""
    before = getattr(model, "_compiled_call_impl", None)
    if on and before is None:
        compile_segmentor(model, device)

    def undo() -> None:
        model._compiled_call_impl = before

    return undo
