"""Failures end to end: a full disk, an unwritable path, Ctrl-C and a bug each end as one line with their exit code;
worker processes (preparation pools, data-loader workers) end with their parent, even when it is killed."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from rein_cli.data.dataset import TrainingSampler, training_loader
from rein_cli.parallel import parallel_map

from .helpers import errors, rein, sets

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, process groups and file-size limits are POSIX")
needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds child processes through /proc")


def training(out: Path, synthetic_root: Path, *extra: str, iters: int = 100_000) -> list[str]:
    """The arguments of a quiet ``rein train`` of the tiny model, long unless told."""
    args = sets(f"data.root={synthetic_root}", "data.eval=[]", *extra)
    return ["--quiet", "train", *args, "--iters", str(iters), "--out", str(out), "--no-progress"]


def wait_for(condition, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.1)


def stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of a process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and brackets
    return int(fields[1]), fields[0], int(fields[19])


def descendants(pid: int) -> set[tuple[int, int]]:
    """(pid, start time) of every living descendant of ``pid``."""
    found, parents = set(), {pid}
    while parents:
        children = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and (info := stat(int(entry.name))) and info[0] in parents and info[1] != "Z":
                children.add((int(entry.name), info[2]))
        found |= children
        parents = {child for child, _ in children}
    return found


def alive(processes: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of ``processes`` still running (the same pid and start time; a zombie has ended)."""
    return {(pid, start) for pid, start in processes if (info := stat(pid)) and info[2] == start and info[1] != "Z"}


def kill_and_expect_no_child_left(process: subprocess.Popen, children: int) -> None:
    """Wait for ``children`` descendants of ``process``, SIGKILL it, and expect them all gone within 5 s."""
    wait_for(lambda: len(descendants(process.pid)) >= children)
    workers = descendants(process.pid)
    process.kill()
    process.wait()
    wait_for(lambda: not alive(workers), timeout=5)


SLOW_MAP = """
import sys, time
from rein_cli.parallel import parallel_map

def slow(item):
    time.sleep(60)
    return item

try:
    parallel_map(slow, list(range(8)), workers=2, progress=False)
except KeyboardInterrupt:
    sys.exit("interrupted")
"""


@needs_proc
def test_preparation_workers_end_when_their_parent_is_killed(spawn):
    kill_and_expect_no_child_left(spawn("-c", SLOW_MAP), children=2)


@needs_proc
def test_data_loader_workers_end_when_training_is_killed(spawn, synthetic_root, tmp_path):
    process = spawn("-m", "rein_cli", *training(tmp_path / "run", synthetic_root, "data.num_workers=1"))
    kill_and_expect_no_child_left(process, children=1)


def death_signal(_: object = None) -> int:
    """The signal Linux sends this process when its parent dies (0: none)."""
    import ctypes

    value = ctypes.c_int()
    ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return value.value


class Draws(Dataset):
    """Items that are draws from every random generator a worker has, and the worker's death signal."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        draws = [random.random(), np.random.random(), torch.rand(()).item(), index]
        return {"image": torch.tensor(draws, dtype=torch.float64), "label": torch.tensor(death_signal())}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a Linux process attribute")
def test_workers_ask_for_sigterm_when_their_parent_dies():
    assert set(parallel_map(death_signal, list(range(4)), workers=2, progress=False)) == {signal.SIGTERM}
    sampler = TrainingSampler(len(Draws()), batch_size=2, seed=0)
    _, deaths = next(training_loader(Draws(), sampler, num_workers=1))
    assert deaths.tolist() == [signal.SIGTERM, signal.SIGTERM]


def test_ending_with_the_parent_leaves_the_loader_workers_draws_as_in_one_process():
    def torch_draws(workers: int) -> list:
        loader = training_loader(Draws(), TrainingSampler(len(Draws()), batch_size=2, seed=3), num_workers=workers)
        return [next(loader)[0][:, 2:] for _ in range(6)]  # torch's draw and the index: three passes over the data

    with_workers, in_process = torch_draws(1), torch_draws(0)
    assert all(torch.equal(a, b) for a, b in zip(with_workers, in_process, strict=True))
    assert len({tuple(batch[:, 1].tolist()) for batch in in_process}) > 1  # reshuffled and drawn anew


@needs_proc
def _write_slowly_or_fail(task: tuple[str, Path]) -> None:
    """A worker task: "fail" fails once the other worker is inside its write; "write" writes for a long time."""
    from rein_cli.io import atomic_path

    kind, folder = task
    if kind == "fail":
        while not list(folder.glob("*.tmp")):  # the other worker's temporary file exists: it is mid-write
            time.sleep(0.01)
        raise ValueError("a failed task")
    with atomic_path(folder / "slow.png") as tmp:
        tmp.write_bytes(b"partial")
        time.sleep(60)


def test_a_worker_stopped_mid_write_leaves_no_temporary_file(tmp_path):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="a failed task"):
        parallel_map(_write_slowly_or_fail, [("fail", tmp_path), ("write", tmp_path)], workers=2, progress=False)
    assert time.perf_counter() - start < 30  # the writing worker was stopped, not waited for
    deadline = time.monotonic() + 10
    while list(tmp_path.iterdir()) and time.monotonic() < deadline:  # it removes its file as it ends
        time.sleep(0.05)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_stops_preparation_workers_at_once_without_their_tracebacks(spawn):
    process = spawn("-c", SLOW_MAP)
    wait_for(lambda: len(descendants(process.pid)) >= 2)
    workers = descendants(process.pid)
    start = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does: every process of the group gets SIGINT
    _, err = process.communicate(timeout=30)
    assert time.monotonic() - start < 10  # not after the tasks already handed out (60 s each)
    assert err == "interrupted\n" and not alive(workers)


AGAIN = "start the run again in its folder with `rein train --resume {run}` (it stopped before its first checkpoint)"


def test_ctrl_c_during_training_is_one_line_and_exit_130(spawn, synthetic_root, tmp_path):
    run = tmp_path / "run"
    args = training(run, synthetic_root, "data.num_workers=1", "train.log_interval=1")
    process = spawn("-m", "rein_cli", *args)
    wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0)
    os.killpg(process.pid, signal.SIGINT)  # the whole group, data-loader worker included, as Ctrl-C does
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err == f"interrupted; {AGAIN.format(run=run)}\n"  # followed in test_remedies.py


@needs_proc
def test_sigterm_stops_training_as_ctrl_c_does_and_its_workers_with_it(spawn, synthetic_root, tmp_path):
    run = tmp_path / "run"
    args = training(run, synthetic_root, "data.num_workers=1", "train.log_interval=1")
    process = spawn("-m", "rein_cli", *args)
    wait_for(lambda: (run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").stat().st_size > 0)
    workers = descendants(process.pid)
    assert workers
    process.terminate()  # SIGTERM to the main process only, as `kill PID` or a job scheduler sends it
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert err == f"interrupted; {AGAIN.format(run=run)}\n"  # no worker's traceback
    wait_for(lambda: not alive(workers), timeout=5)


FULL_DISK = """
import resource, signal, sys
from rein_cli.engine import train

save = train.save_checkpoint

def save_then_the_disk_is_full(*args, **kwargs):
    path = save(*args, **kwargs)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16_384, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    return path

train.save_checkpoint = save_then_the_disk_is_full
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
from rein_cli.cli import run
run(sys.argv[1:])
"""


def test_a_full_disk_during_training_is_one_line_and_keeps_the_last_checkpoint(spawn, synthetic_root, tmp_path):
    from rein_cli.engine.checkpoint import load_segmentor

    run = tmp_path / "run"
    args = training(run, synthetic_root, "train.checkpoint_interval=2", iters=6)
    process = spawn("-c", FULL_DISK, *args)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert err.startswith("error: cannot write") and err.count("\n") == 1, err
    assert "the disk or the file-size limit is full (File too large)" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last"]  # no temporary folder left
    model = load_segmentor(run / "checkpoints" / "last", device="cpu")  # the one before the disk was full
    assert model is not None
    assert '"iterations": 2' in (run / "checkpoints" / "last" / "config.json").read_text()


FULL_DISK_FROM = """
import importlib, resource, signal, sys
limit, hook = int(sys.argv[1]), sys.argv[2]  # the file-size limit in bytes, and from when: now or a function's call
del sys.argv[1:3]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing

def full():
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

if hook == "now":
    full()
else:
    module, name = hook.rsplit(".", 1)
    module = importlib.import_module(module)
    original = getattr(module, name)

    def full_then_call(*args, **kwargs):
        full()
        return original(*args, **kwargs)

    setattr(module, name, full_then_call)
from rein_cli.cli import run
run(sys.argv[1:])
"""


def test_a_full_disk_during_prediction_is_one_line_and_keeps_the_earlier_predictions(
    spawn, trained, synthetic_root, tmp_path
):
    from rein_cli.engine.checkpoint import load_segmentor
    from rein_cli.io import read_image

    checkpoint, images = trained / "checkpoints" / "last", synthetic_root / "synthetic" / "images" / "val"
    out = tmp_path / "predictions"
    args = ["--quiet", "predict", checkpoint, images, "--out", out, "--mode", "whole", "--no-progress"]
    process = spawn("-m", "rein_cli", *args)
    assert process.wait(timeout=300) == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*.*"))}
    assert len(before) == 3 * 4

    process = spawn("-c", FULL_DISK_FROM, 1_000, "now", *args)  # a few small files fit, then one does not
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert re.fullmatch(
        rf"error: cannot write {re.escape(str(out))}/(labels|color|overlay)/00000\d\.(png|jpg): the disk or the "
        r"file-size limit is full \(File too large\); free space there \(`df -h`; `ulimit -f` shows the file-size "
        r"limit\) and run the same command again\n",
        err,
    ), err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.*"))} == before  # no temporary file, nothing cut short
    assert all(read_image(p).size for p in before)
    assert load_segmentor(checkpoint, device="cpu").classes
    process = spawn("-m", "rein_cli", *args)  # with space again, the same command, as it says
    assert process.wait(timeout=300) == 0 and sorted(out.rglob("*.*")) == sorted(before)


def test_a_full_disk_during_preparation_names_the_label_and_a_rerun_completes(spawn, tmp_path):
    from rein_cli.data.verify import verify

    from . import fake_datasets as fake

    sources, _ = fake.cityscapes(tmp_path / "src")
    out = tmp_path / "cityscapes"
    args = ["--quiet", "data", "prepare", "cityscapes", "--out", out, "--workers", 2, "--no-progress"]
    args += [arg for source in sources for arg in ("--from", source)]
    # the archives are extracted, then the disk is full when the workers write the first train-id labels
    process = spawn("-c", FULL_DISK_FROM, 100, "rein_cli.data.prepare.parallel_map", *args)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err
    assert re.fullmatch(
        rf"error: cannot write {re.escape(str(out))}/labels/train/\S+\.png: the disk or the file-size limit is "
        r"full \(File too large\); .* and run the same command again: a download or a preparation goes on where it "
        r"stopped\n",
        err,
    ), err
    assert not (out / "manifest.json").exists() and not list(out.rglob("*.tmp"))
    process = spawn("-m", "rein_cli", *args)  # the same command, with space again: it resumes and completes
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    manifest, problems = verify(out, tmp_path, workers=1, progress=False)
    assert problems == [] and manifest.counts == {"train": 4, "val": 2, "test": 1}


@pytest.fixture
def unwritable() -> Path:
    """A folder no one may create, root included (sysfs)."""
    path = Path("/sys/rein-unwritable")
    try:
        path.mkdir()
    except OSError:
        return path
    path.rmdir()
    pytest.skip("/sys is writable here")


def test_an_unwritable_output_path_is_one_line_naming_it(trained, unwritable, synthetic_root, capsys):
    assert rein("train", *sets(f"data.root={synthetic_root}"), "--iters", 1, "--out", unwritable / "run") == 1
    err = errors(capsys).splitlines()[-1]
    assert err.startswith("error: cannot create output directory /sys/rein-unwritable/run: ") and "--out" in err
    image = next((synthetic_root / "synthetic" / "images" / "val").iterdir())
    checkpoint = trained / "checkpoints" / "last"
    assert rein("predict", checkpoint, image, "--out", unwritable / "p", "--mode", "whole", "--no-progress") == 1
    err = errors(capsys).splitlines()[-1]
    assert err.startswith("error: cannot write to /sys/rein-unwritable/p: ") and "choose a writable --out" in err


def test_a_bug_says_so_first_then_shows_its_traceback(monkeypatch, capsys):
    from rein_cli.data import catalog

    def broken(data_root):
        raise ValueError("an index out of range")

    monkeypatch.setattr(catalog, "list_datasets", broken)
    assert rein("data", "list") == 1
    lines = errors(capsys).splitlines()
    assert lines[0] == (
        "error: bug in rein: ValueError: an index out of range; please report it with its traceback "
        "(rerun with --debug for the full report)"
    )
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "ValueError: an index out of range"
    assert rein("--debug", "data", "list") == 1
    lines = errors(capsys).splitlines()  # with --debug: the traceback first, the line last
    assert lines[0] == "Traceback (most recent call last):" and lines[-1].startswith("error: bug in rein:")
