"""Running a function over many items on all cores, with progress (fork where the platform has it)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from rein_cli.progress import Progress


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

    ``progress``: a bar (else plain lines, see `rein_cli.progress`)."""
    workers = min(workers or os.cpu_count() or 1, max(len(tasks), 1))
    results = []
    with Progress(len(tasks), desc, unit=unit, bar=progress) as bar:
        if workers > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
                for result in pool.map(fn, tasks, chunksize=max(1, min(32, len(tasks) // (4 * workers)))):
                    results.append(result)
                    bar.update()
        else:
            for task in tasks:
                results.append(fn(task))
                bar.update()
    return results
