"""Running a function over many items on all cores, with a progress bar (fork where the platform has it)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from tqdm import tqdm


def parallel_map(fn: Callable, tasks: list, *, workers: int | None = None, progress: bool = True, desc: str = "",
                 unit: str = "file") -> list:  # fmt: skip
    """``[fn(t) for t in tasks]`` in ``workers`` processes (default: all cores), results in task order."""
    workers = min(workers or os.cpu_count() or 1, max(len(tasks), 1))
    bar = tqdm(total=len(tasks), desc=desc, unit=unit, disable=not progress, leave=False)
    results = []
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
    bar.close()
    return results
