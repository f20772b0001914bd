"""Running a function over many items on all cores, with progress (fork where the platform has it), and child
processes that end with their parent."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from rein_cli.progress import Progress

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def parallel_map(
    fn: Callable,
    tasks: list,
    *,
    workers: int | None = None,
    progress: bool = True,
    desc: str = "",
    unit: str = "file",
) -> list:
    """``[fn(t) for t in tasks]`` in ``workers`` processes (default: all cores), results in task order.

    ``progress``: a bar (else plain lines, see `rein_cli.progress`). The workers end with this process, whether it
    is killed (`end_with_parent`) or fails or is interrupted (the tasks not started are dropped, the workers stopped
    at once, the pool's own threads ended before this returns, without a word); Ctrl-C is left to this process (the
    workers ignore SIGINT), which raises `KeyboardInterrupt`."""
    workers = min(workers or os.cpu_count() or 1, max(len(tasks), 1))
    results = []
    with Progress(len(tasks), desc, unit=unit, bar=progress) as bar:
        if workers > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context(method),
                initializer=_init_worker,
                initargs=(os.getpid(),),
            )
            size = max(1, min(32, len(tasks) // (4 * workers)))
            try:
                # submitted one by one, never cancelled (`_stop`): Executor.map cancels its futures as it is left,
                # and a pool then broken by its workers' end fails on them in its own thread, with a traceback
                futures = [pool.submit(_apply, fn, tasks[i : i + size]) for i in range(0, len(tasks), size)]
                for future in futures:
                    for result in future.result():
                        results.append(result)
                        bar.update()
            except BaseException:
                _stop(pool)
                raise
            pool.shutdown()
        else:
            for task in tasks:
                results.append(fn(task))
                bar.update()
    return results


def _apply(fn: Callable, chunk: list) -> list:
    return [fn(task) for task in chunk]


# The temporary files this process is writing (`rein_cli.io.atomic_path` registers them): a worker process ended by
# SIGTERM (its parent failed, was interrupted or died) removes them before it goes, so nothing is left behind.
_TEMPORARY: set[str] = set()


def track_temporary(path: str | os.PathLike) -> None:
    _TEMPORARY.add(os.fspath(path))


def untrack_temporary(path: str | os.PathLike) -> None:
    _TEMPORARY.discard(os.fspath(path))


def _end_now(signum: int, frame: object) -> None:
    """A worker's SIGTERM: remove the temporary files being written and end at once, with the signal's exit code."""
    for path in list(_TEMPORARY):
        with contextlib.suppress(OSError):
            os.unlink(path)
    os._exit(128 + signum)


def end_with_parent(parent: int) -> None:
    """In a child process of ``parent``: have Linux send it SIGTERM when the parent dies, even by SIGKILL.

    Does nothing on other platforms. A parent that died before this call ends the child now. Linux ties the signal
    to the thread that started the child: start children from a thread that outlives them (the main thread).
    SIGTERM ends the child at once, removing the temporary files it was writing (the CLI's handler, inherited
    through fork, would turn it into an interrupt and a traceback)."""
    signal.signal(signal.SIGTERM, _end_now)
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl in this C library: nothing to ask for
        return
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _init_worker(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group: the parent handles it
    end_with_parent(parent)


def _stop(pool: ProcessPoolExecutor) -> None:
    """Drop the tasks not started and end the workers now, rather than after the tasks already handed out; return
    once the pool's threads have ended (a SIGTERM to the whole process group may have ended some workers already)."""
    if hasattr(pool, "terminate_workers"):  # Python 3.14
        pool.terminate_workers()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())  # public only from Python 3.14 on
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # already ended and reaped
            process.terminate()
    for process in processes:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.join(5)
    # with every worker gone the pool is broken: its thread fails the pending tasks (none was cancelled, so this
    # raises nothing) and ends; a pool whose workers had not started yet has nothing pending
    pool.shutdown(wait=bool(processes))
