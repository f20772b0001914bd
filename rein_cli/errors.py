"""The one exception type, "did you mean", and what the command line makes of a failure: one line, one exit code."""

from __future__ import annotations

import difflib
import errno
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass

EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # docs/errors.md; usage errors (2) are click's own


class ReinError(Exception):
    """A problem with the user's input; the CLI prints its message as one line, without a traceback."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, told by the work it stopped how to go on: ``again`` completes "interrupted; ..." (e.g.
    "continue the run with `rein train --resume runs/train`"); empty: the command's own words (`Advice.again`)."""

    def __init__(self, again: str = "") -> None:
        super().__init__(again)
        self.again = again


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f' (did you mean "{close[0]}"?)' if close else ""


def unknown_name(kind: str, value: str, choices: Iterable[str], hint: str = "") -> ReinError:
    """An error for an unknown name, with a "did you mean" and the list of known names."""
    choices = sorted(choices)
    message = f'unknown {kind} "{value}"{did_you_mean(value, choices)}; known: {", ".join(choices)}'
    return ReinError(message + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class Failure:
    """What the command line prints for an exception (one line, after ``error: ``) and the exit code it ends with.

    ``bug``: not an expected failure; the traceback is printed after the line."""

    message: str
    code: int = EXIT_ERROR
    bug: bool = False


AGAIN = "run the same command again"  # the default way to go on after an interruption or a full disk
DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
# A DataLoader worker's exception arrives re-created from the worker's formatted traceback.
_WORKER = re.compile(r"Caught (\w+) (in DataLoader worker process \d+)\.\nOriginal Traceback")
_ERRNO = re.compile(r"\[Errno (\d+)\] ([^:\n]+)(?:: '(.*?)'(?: -> '.*')?)?\s*$")  # str(OSError(...))
_OS_ERROR = re.compile(r"\(os error (\d+)\)")  # a Rust library's I/O error, e.g. safetensors writing a file
_LIBRARY_ERRNOS = DISK_FULL | {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOENT, errno.EMFILE, errno.ENFILE}
_HOST_MEMORY = ("DefaultCPUAllocator: can't allocate memory", "Cannot allocate memory")
_DEVICE_MEMORY = ("out of memory",)  # CUDA out of memory, CUDA error: out of memory, MPS backend out of memory


@dataclass(frozen=True)
class Advice:
    """What the user can change after a failure, in the words of whatever ran (the command line gives each of its
    commands' options and settings; these defaults name none)."""

    memory: str = "lower the batch size or the image size"  # what uses less memory
    ram: str = ""  # what else uses less RAM, appended to ``memory`` (" or data.num_workers")
    cpu: str = "run on the CPU"  # the way off the GPU
    workers: str = "worker processes"  # what to use fewer of when too many files are open
    retry: str = ""  # how to run again after a worker process died (" with fewer --workers")
    report: str = ""  # how to get the whole report of a bug (" (rerun with --debug for the full report)")
    again: str = AGAIN  # how to go on after an interruption or a full disk: it follows "interrupted; " or "and "


def explain(err: BaseException, advice: Advice | None = None) -> Failure:
    """The line and exit code for ``err``, its hints in the words of ``advice``; pure. Anything not known as an
    expected failure is a bug."""
    advice = advice or Advice()
    if isinstance(err, KeyboardInterrupt):
        return Failure(interrupted(getattr(err, "again", "") or advice.again), EXIT_INTERRUPTED)
    name, text, where = type(err).__name__, str(err), ""
    if wrapped := _WORKER.match(text):
        name, text, where = wrapped[1], _original_message(text, wrapped[1]), f" ({wrapped[2]})"
    if isinstance(err, ReinError):
        return Failure(" ".join(text.split()) if where else text)
    code, filename = os_error(err, text)
    if code == errno.ENOMEM:
        return Failure(memory_message("RAM", text, advice))
    if code is not None and (isinstance(err, OSError) or code in _LIBRARY_ERRNOS):
        return Failure(os_message(code, filename, advice))
    if memory := _memory(err, text):
        return Failure(memory_message(memory, text, advice))
    if isinstance(err, RuntimeError) and text.startswith("DataLoader worker (pid"):
        return Failure(
            f"a data-loading worker died ({_first_line(text)}), most often for lack of memory or of shared memory "
            "(/dev/shm); lower data.num_workers or data.batch_size (data.num_workers=0 loads in the main process)"
        )
    if any(kind.__name__ == "BrokenProcessPool" for kind in type(err).__mro__):
        return Failure(
            f"a worker process died (killed, most often for lack of memory); {AGAIN}{advice.retry}: it resumes where "
            "it stopped"
        )
    report = f"{name}: {_first_line(text)}" if text.strip() else name
    return Failure(
        f"bug in rein{where}: {report}; please report it with its traceback{advice.report}",
        bug=True,
    )


def os_message(code: int, filename: str | os.PathLike | None, advice: Advice | None = None) -> str:
    """One line for an operating-system error ``code`` (an ``errno``) on ``filename``: what failed and what to do."""
    reason = os.strerror(code)
    path = f" {os.fsdecode(filename)}" if filename is not None else ""
    if code in DISK_FULL:
        return (
            f"cannot write{path}: the disk or the file-size limit is full ({reason}); free space there "
            f"(`df -h`; `ulimit -f` shows the file-size limit) and {(advice or Advice()).again}"
        )
    if code in (errno.EACCES, errno.EPERM):
        target = path.strip() or "a file or folder"
        return f"cannot write or read {target} ({reason}); fix its permissions or choose another path"
    if code == errno.ENOENT:
        return f"not found:{path}; check the path" if path else f"a file or folder was not found ({reason})"
    if code == errno.EROFS:
        return f"cannot write{path}: it is on a read-only file system; choose a writable location"
    if code in (errno.EMFILE, errno.ENFILE):
        workers = (advice or Advice()).workers
        return f"too many open files ({reason}{path and ':' + path}); raise `ulimit -n` or use fewer {workers}"
    if code == errno.ENOTDIR and path:
        return f"{path.strip()}: a part of this path is a file, not a folder; choose another path"
    return f"{reason}{path and ':' + path}; check the path and {(advice or Advice()).again}"


def interrupted(again: str = AGAIN) -> str:
    """The line of an interrupted command: ``again`` says how to go on."""
    return f"interrupted; {again}"


def os_error(err: BaseException, text: str | None = None) -> tuple[int | None, str | None]:
    """The ``errno`` and file name of an operating-system error: an `OSError`'s own, or as written in its message (an
    error re-created from a worker's), or a Rust library's ``(os error N)`` (no file name); (None, None) else."""
    text = str(err) if text is None else text
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno, err.filename
    if isinstance(err, OSError) and (found := _ERRNO.search(text)):
        return int(found[1]), found[3]
    if found := _OS_ERROR.search(text):
        return int(found[1]), None
    return None, None


def memory_message(memory: str, text: str, advice: Advice | None = None) -> str:
    """One line for running out of memory (``memory``: ``"GPU"`` or ``"RAM"``), its hint in the words of ``advice``."""
    advice = advice or Advice()
    if memory == "GPU":
        detail = ". ".join(_first_line(text).split(". ")[:2]).rstrip(".")
        return f"out of GPU memory ({detail}); {advice.memory}, or {advice.cpu}"
    return f"out of memory (RAM); {advice.memory}{advice.ram}, or close other programs"


def _memory(err: BaseException, text: str) -> str | None:
    """``"RAM"`` or ``"GPU"`` when ``err`` is running out of memory, else None."""
    torch = sys.modules.get("torch")  # not imported: the error cannot be torch's
    if isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and any(s in text for s in _HOST_MEMORY)):
        return "RAM"
    if torch is not None and isinstance(err, torch.OutOfMemoryError):
        return "GPU"
    if isinstance(err, RuntimeError) and any(s in text for s in _DEVICE_MEMORY):  # torch.AcceleratorError among them
        return "GPU"
    return None


def _original_message(text: str, name: str) -> str:
    """The message of the exception ``name`` at the end of a formatted traceback (all of it, if it spans lines)."""
    starts = list(re.finditer(rf"^(?:[\w.]+\.)?{name}: ", text, re.MULTILINE))
    return text[starts[-1].end() :].strip() if starts else text.splitlines()[-1]


def _first_line(text: str, limit: int = 300) -> str:
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."
