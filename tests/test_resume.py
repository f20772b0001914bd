"""Exact resume: a run killed with SIGKILL and resumed ends bit for bit as the uninterrupted run; clear refusals."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .helpers import checkout_env, errors, rein, sets

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL")

# `rein` in a child that kills itself with SIGKILL at a chosen point: at the start of an iteration (the previous
# one logged, its checkpoint written), or inside a checkpoint's write (its training state saved, not yet renamed)
KILLED = """
import os, signal, sys
import torch
from rein_cli.engine import train

where, at = sys.argv[1], int(sys.argv[2])
del sys.argv[1:3]
lr_at, save = train.lr_at, torch.save

def lr_then_die(step, **kwargs):
    if where == "iteration" and step == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return lr_at(step, **kwargs)

def save_then_die(obj, *args, **kwargs):
    save(obj, *args, **kwargs)
    if where == "checkpoint" and isinstance(obj, dict) and obj.get("step") == at:
        os.kill(os.getpid(), signal.SIGKILL)

train.lr_at, torch.save = lr_then_die, save_then_die
from rein_cli.cli import run
run(sys.argv[1:])
"""


def python(*args: object) -> subprocess.CompletedProcess:
    env = checkout_env()
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def training(synthetic_root: Path, *extra: str) -> list[str]:
    """A tiny Mask2Former run (its loss draws random points: the generators matter) with augmentation and 2
    loader workers, a checkpoint every 2 of 6 iterations."""
    args = sets(
        f"data.root={synthetic_root}",
        "data.eval=[]",
        "data.num_workers=2",
        "model.head=mask2former",
        "model.rein.token_length=8",
        "train.checkpoint_interval=2",
        *extra,
    )
    return ["--quiet", "train", *args, "--iters", "6", "--no-progress"]


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root, tmp_path_factory):
    run = tmp_path_factory.mktemp("whole") / "run"
    done = python("-m", "rein_cli", *training(synthetic_root), "--out", run)
    assert done.returncode == 0, done.stderr
    yield run
    shutil.rmtree(run.parent)  # ~0.8 GB of checkpoints


def steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(("where", "at"), [("iteration", 3), ("checkpoint", 4)])
def test_a_killed_run_resumes_bit_for_bit(uninterrupted, synthetic_root, tmp_path, where, at):
    run = tmp_path / "run"
    killed = python("-c", KILLED, where, at, *training(synthetic_root), "--out", run)
    assert killed.returncode == -9, killed.stderr
    assert (run / "checkpoints" / "iter_2" / "training_state.pt").is_file()
    assert not (run / "checkpoints" / "iter_4").exists()  # killed inside its write: no folder that looks complete
    resumed = python("-m", "rein_cli", "train", "--resume", run, "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert steps(run) == [1, 2, 3, 4, 5, 6]  # each iteration once
    for folder in ("last", "iter_6"):
        ours = load_file(str(run / "checkpoints" / folder / "model.safetensors"))
        theirs = load_file(str(uninterrupted / "checkpoints" / folder / "model.safetensors"))
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), folder
    whole = [json.loads(x) for x in (uninterrupted / "metrics.jsonl").read_text().splitlines()]
    again = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in again] == [r["loss"] for r in whole]
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert kept == ["iter_2", "iter_4", "iter_6", "last"]  # train.keep_checkpoints = 3, nothing half-written


def test_resume_refuses_other_settings_and_may_train_further(uninterrupted, tmp_path, capsys):
    before = (uninterrupted / "metrics.jsonl").read_text()
    assert rein("train", "--resume", uninterrupted, "--set", "optim.lr=0.5", "--set", "data.batch_size=4") == 1
    err = errors(capsys)
    assert "data.batch_size (2 -> 4), optim.lr (0.0001 -> 0.5)" in err and "may change only train.max_iters" in err
    assert rein("train", "--resume", uninterrupted) == 1
    assert "already reached iteration 6; give --iters beyond it" in errors(capsys)
    assert (uninterrupted / "metrics.jsonl").read_text() == before  # nothing written by the refused runs

    run = tmp_path / "copy"
    import shutil

    shutil.copytree(uninterrupted, run)
    settings = ["--set", "train.keep_checkpoints=1", "--set", "data.num_workers=0"]
    assert rein("train", "--resume", run, "--iters", 7, *settings, "--no-progress") == 0
    assert steps(run) == [1, 2, 3, 4, 5, 6, 7]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter_7", "last"]


def test_resume_of_a_folder_that_is_not_a_run_and_of_one_without_a_checkpoint(tmp_path, capsys, synthetic_root):
    (tmp_path / "empty").mkdir()
    assert rein("train", "--resume", tmp_path / "empty") == 1
    assert f"--resume {tmp_path / 'empty'}: not a training run (no config.yaml)" in errors(capsys)
    run = tmp_path / "young"  # killed before its first step checkpoint
    run.mkdir()
    args = sets(f"data.root={synthetic_root}", "data.eval=[]")
    assert rein("train", *args, "--iters", 1, "--out", run, "--no-progress") == 0
    for path in (run / "checkpoints").glob("iter_*"):
        (path / "training_state.pt").unlink()
    assert rein("train", "--resume", run, "--iters", 2, "--no-progress") == 0  # starts again, in place
    assert steps(run) == [1, 2]
    assert (run / "checkpoints" / "iter_2" / "training_state.pt").is_file()


def test_a_metrics_line_of_another_shape_is_one_line_naming_it(uninterrupted, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(uninterrupted, run)
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    advice = "correct that line or delete it, then resume again (the resumed run writes the records after its step)"
    for bad, found in (('{"step": "abc", "loss": 1.0}', "step must be a whole number, found 'abc'"), ("[1, 2]", None)):
        metrics.write_text("\n".join([*lines[:2], bad, *lines[2:]]) + "\n")
        assert rein("train", "--resume", run, "--iters", 7, "--no-progress") == 1  # was a traceback
        shown = found or "must hold an object of keys, found [1, 2]"
        assert errors(capsys) == f"error: {metrics}, line 3: {shown}; {advice}"
    metrics.write_text("\n".join([*lines[:2], "{not json", *lines[2:]]) + "\n")
    assert rein("train", "--resume", run, "--iters", 7, "--no-progress") == 1
    assert errors(capsys).startswith(f"error: {metrics}, line 3: not a JSON record (")
    metrics.write_text("\n".join([*lines, '{"step": 6, "lo']) + "\n")  # the last line, cut by a kill: dropped
    assert rein("train", "--resume", run, "--iters", 7, "--no-progress", "--set", "data.num_workers=0") == 0
    assert steps(run) == [1, 2, 3, 4, 5, 6, 7]
