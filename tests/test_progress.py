"""Progress without a terminal: plain lines at a steady interval, with count, values, speed and time left."""

import itertools
import logging
import re
import time

import pytest

from rein_cli import progress as module
from rein_cli.progress import Progress, duration, track


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(module.time, "monotonic", clock)
    return clock


def test_a_line_says_where_the_work_is_and_when_it_ends(clock):
    with Progress(40000, "training", bar=False) as progress:
        clock.now += 1.64 * 1200
        progress.update(1200)
        progress.set(loss="1.234")
        assert progress.line() == "training 1200/40000 loss 1.234 1.64 s/it ETA 17h40m"  # 38800 x 1.64 s
        clock.now += 10
        assert progress.line(finished=True) == "training 1200/40000 loss 1.234 done in 32m58s"


def test_fast_work_bytes_and_unknown_totals(clock):
    with Progress(300, "generating scenes", unit="scene", bar=False) as progress:
        clock.now += 2
        progress.update(100)
        assert progress.line() == "generating scenes 100/300 50.0 scene/s ETA 4s"
    with Progress(11_600_000_000, "leftImg8bit.zip", unit="B", unit_scale=True, bar=False) as progress:
        clock.now += 10
        progress.update(250_000_000)
        assert progress.line() == "leftImg8bit.zip 250.0 MB/11.6 GB 25.0 MB/s ETA 7m34s"
    with Progress(None, "reading", bar=False) as progress:
        assert progress.line() == "reading 0"  # nothing done yet: no speed, no estimate


def test_durations():
    assert [duration(s) for s in (0.4, 12, 245, 23532, 90061)] == ["0s", "12s", "4m05s", "6h32m", "25h01m"]


def test_plain_lines_come_at_the_interval_and_stop_with_the_work(caplog):
    assert 10 <= module.LINE_INTERVAL <= 60  # the promise: a line at least once a minute, at most every 10 s
    caplog.set_level(logging.INFO, logger="rein_cli.progress")
    with Progress(100, "training", bar=False, interval=0.05) as progress:
        for _ in range(20):
            time.sleep(0.02)
            progress.update()
    lines = [r for r in caplog.records if r.name == "rein_cli.progress"]
    assert 3 <= len(lines) <= 12
    assert all(r.getMessage().startswith("training ") for r in lines)
    assert lines[-1].getMessage().startswith("training 20/100 done in")  # a task that reported says it ended
    gaps = [b.created - a.created for a, b in itertools.pairwise(lines[:-1])]
    assert all(gap >= 0.04 for gap in gaps)  # never more often than the interval
    count = len(caplog.records)
    time.sleep(0.15)
    assert len(caplog.records) == count  # the reporting thread ended with the work


@pytest.mark.parametrize(("error", "ended"), [(KeyboardInterrupt, "interrupted after"), (ValueError, "failed after")])
def test_work_that_stops_early_says_so_not_done(caplog, error, ended):
    caplog.set_level(logging.INFO, logger="rein_cli.progress")
    with pytest.raises(error), Progress(100, "training", bar=False, interval=0.02) as progress:
        progress.update(7)
        time.sleep(0.1)
        raise error
    last = [r.getMessage() for r in caplog.records if r.name == "rein_cli.progress"][-1]
    assert last.startswith(f"training 7/100 {ended} ") and "done" not in last


def test_nothing_is_reported_when_info_is_off(caplog):
    caplog.set_level(logging.WARNING, logger="rein_cli.progress")
    with Progress(10, "quiet", bar=False, interval=0.01) as progress:
        time.sleep(0.05)
        assert progress._thread is None
    assert not caplog.records


def test_track_counts_what_it_yields(caplog, monkeypatch):
    monkeypatch.setattr(module, "LINE_INTERVAL", 0.02)
    caplog.set_level(logging.INFO, logger="rein_cli.progress")
    seen = []
    for item in track(range(5), desc="eval", bar=False):
        time.sleep(0.02)
        seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert caplog.records[-1].getMessage().startswith("eval 5/5 done in")


@pytest.mark.parametrize("cause", [KeyboardInterrupt, RuntimeError])
def test_a_plain_line_cut_short_says_interrupted(caplog, cause):
    caplog.set_level(logging.INFO, logger="rein_cli.progress")
    with pytest.raises(cause), Progress(100, "training", bar=False, interval=0.02) as progress:
        progress.update(7)
        time.sleep(0.1)
        raise cause("stop")  # Ctrl-C (or SIGTERM, which rein turns into it), or an error
    last = caplog.records[-1].getMessage()
    ended = "interrupted" if cause is KeyboardInterrupt else "failed"
    assert re.fullmatch(rf"training 7/100 {ended} after \d+s", last), last
    assert not any("done" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("leave", [True, False])
def test_a_bar_cut_short_stays_and_says_interrupted(capsys, leave):
    with pytest.raises(KeyboardInterrupt), Progress(10, "eval synthetic", unit="img", leave=leave) as progress:
        progress.update(4)
        raise KeyboardInterrupt
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("eval synthetic (interrupted):") and "4/10" in last, last
    with Progress(10, "eval synthetic", unit="img", leave=True) as progress:
        progress.update(10)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert last.startswith("eval synthetic:") and "10/10" in last and "interrupted" not in last, last


def test_tracked_work_cut_short_says_failed(caplog, monkeypatch):
    monkeypatch.setattr(module, "LINE_INTERVAL", 0.02)
    caplog.set_level(logging.INFO, logger="rein_cli.progress")
    with pytest.raises(ValueError):
        for item in track(range(5), desc="eval", bar=False):
            time.sleep(0.03)
            if item == 3:
                raise ValueError("a bad image")
    assert re.fullmatch(r"eval 3/5 failed after \d+s", caplog.records[-1].getMessage())  # an error, not Ctrl-C


def test_paused_work_counts_neither_in_the_speed_nor_in_the_time_left(clock):
    with Progress(100, "training", bar=False) as progress:
        clock.now += 20
        progress.update(10)
        with progress.paused():  # an evaluation of 10 minutes between two steps
            clock.now += 600
        assert progress.line() == "training 10/100 2.00 s/it ETA 3m00s"
        clock.now += 2
        progress.update()
        assert progress.line(finished=True) == "training 11/100 done in 22s"


def test_no_line_is_reported_while_paused(caplog):
    caplog.set_level(logging.INFO, logger="rein_cli.progress")
    with Progress(100, "training", bar=False, interval=0.02) as progress:
        progress.update()
        with progress.paused():
            time.sleep(0.2)
            assert not caplog.records  # the evaluation reports itself; the training line keeps quiet
        time.sleep(0.1)
    assert len(caplog.records) >= 2  # lines again once the pause is over, and the last one


@pytest.mark.parametrize("fails", [True, False])
def test_an_extraction_cut_short_says_so(tmp_path, monkeypatch, fails):
    import errno
    import zipfile

    from rein_cli.data import archives
    from rein_cli.errors import ReinError

    closed = []

    class Recording(Progress):
        def close(self, ended: str = "done") -> None:
            closed.append(ended)
            super().close(ended)

    monkeypatch.setattr(archives, "Progress", Recording)
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("images/1.png", b"x" * 1000)
    if fails:

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(archives.shutil, "copyfileobj", full)
        with pytest.raises(ReinError, match="the disk or the file-size limit is full"):
            archives.extract(archive, tmp_path / "out", progress=False)
    else:
        archives.extract(archive, tmp_path / "out", progress=False)
    assert closed[-1] == ("failed" if fails else "done")  # the extraction's line: "failed after ..." or "done in ..."
