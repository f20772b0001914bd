"""Progress of long work: a bar on a terminal, plain log lines at a steady pace everywhere else.

Without a terminal (CI logs, nohup, job schedulers) or with ``--no-progress``, one line every `LINE_INTERVAL`
seconds, e.g. ``training 1200/40000 loss 1.234 1.64 s/it ETA 17h40m``. Work cut short (Ctrl-C, an error) ends with
a line that says so: ``training 1200/40000 interrupted after 32m48s``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

LINE_INTERVAL = 30.0  # seconds between plain lines (the promise: at least one a minute, at most one per 10 s)

log = logging.getLogger("rein_cli.progress")
T = TypeVar("T")


class Progress:
    """Counts work done towards ``total`` (None: unknown). With ``bar`` a tqdm bar is drawn; without, a background
    thread logs `line()` at INFO level every ``interval`` seconds while the work lasts (nothing when INFO is off).
    ``set(loss=1.23)`` adds values to the bar and the lines; `paused` sets other work aside (it is neither counted in
    the speed nor reported). Use it as a context manager (an exception inside marks the work interrupted), or call
    `close`."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        *,
        unit: str = "it",
        bar: bool = True,
        unit_scale: bool = False,
        initial: int = 0,
        leave: bool = False,
        interval: float | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self._first = initial
        self.values: dict[str, str] = {}
        self._start = time.monotonic()
        self._printed = self._closed = False
        self._paused = threading.Event()
        self._bar = None
        if bar:
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                unit_scale=unit_scale,
                initial=initial,
                leave=leave,
                dynamic_ncols=True,
            )
        self._stop = threading.Event()
        self._thread = None
        if not bar and log.isEnabledFor(logging.INFO):
            every = LINE_INTERVAL if interval is None else interval
            self._thread = threading.Thread(target=self._tick, args=(every,), name=f"progress {desc}", daemon=True)
            self._thread.start()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set(self, **values: Any) -> None:
        """Values shown beside the count (the latest of each), e.g. ``set(loss=f"{loss:.3f}")``."""
        self.values = {**self.values, **{k: str(v) for k, v in values.items()}}
        if self._bar is not None:
            self._bar.set_postfix(self.values, refresh=False)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Other work done meanwhile (an evaluation between training steps, with its own progress): no line is
        reported, and its time counts neither in the speed nor in the time left."""
        self._paused.set()
        start = time.monotonic()
        try:
            yield
        finally:
            self._start += time.monotonic() - start
            if self._bar is not None:
                self._bar.unpause()  # tqdm's clock skips the pause too
            self._paused.clear()

    def line(self, *, finished: bool = False, ended: str = "done") -> str:
        """One plain status line: description, count, values, speed and the estimated time left (or, ``finished``,
        how it ``ended`` and the time it took: ``done``, ``interrupted``, ``failed``)."""
        elapsed, done = time.monotonic() - self._start, self.n - self._first
        count = self._amount(self.n) + (f"/{self._amount(self.total)}" if self.total is not None else "")
        parts = [self.desc, count, *(f"{k} {v}" for k, v in self.values.items())]
        if finished:
            parts.append(f"{ended} {'in' if ended == 'done' else 'after'} {duration(elapsed)}")
        elif done > 0 and elapsed > 0:
            per_second = done / elapsed
            if self.unit_scale:
                parts.append(f"{self._amount(per_second)}/s")
            elif per_second >= 1:
                parts.append(f"{per_second:.1f} {self.unit}/s")
            else:
                parts.append(f"{1 / per_second:.2f} s/{self.unit}")
            if self.total is not None:
                parts.append(f"ETA {duration(max(self.total - self.n, 0) / per_second)}")
        return " ".join(p for p in parts if p)

    def _amount(self, value: float) -> str:
        """A count, or with ``unit_scale`` an amount with an SI prefix and the unit (``1.2 GB``)."""
        if not self.unit_scale:
            return f"{value:.0f}"
        prefixes, power = ("", "k", "M", "G", "T"), 0
        while abs(value) >= 1000 and power < len(prefixes) - 1:
            value, power = value / 1000, power + 1
        return f"{value:.1f} {prefixes[power]}{self.unit}"

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            if not self._paused.is_set():
                log.info(self.line())
                self._printed = True

    def close(self, ended: str = "done") -> None:
        """End the work (once; later calls do nothing). A task that reported along the way says how it ``ended``
        (done, interrupted, failed); a bar cut short stays on screen and says so too."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self._printed:  # a long task that reported along the way also says when it ended
                log.info(self.line(finished=True, ended=ended))
        if self._bar is not None:
            if ended != "done":
                self._bar.set_description_str(f"{self.desc} ({ended})", refresh=False)
                self._bar.leave = True
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        failed = "interrupted" if kind is not None and issubclass(kind, KeyboardInterrupt) else "failed"
        self.close("done" if kind is None else failed)


def track(
    items: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it", bar: bool = True, leave: bool = False
) -> Iterator[T]:
    """Yield ``items`` while reporting their progress (see `Progress`)."""
    total = total if total is not None else len(items) if hasattr(items, "__len__") else None
    with Progress(total, desc, unit=unit, bar=bar, leave=leave) as progress:
        for item in items:
            yield item
            progress.update()


def duration(seconds: float) -> str:
    """``6h32m``, ``4m05s`` or ``12s``."""
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
