"""Training: a complete run directory, both heads, the baselines, clear failures, progress without a terminal."""

import json
import re
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file

from .helpers import errors, rein, sets


def test_train_writes_a_complete_run(trained):
    assert (trained / "config.yaml").is_file()
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in lines)
    assert lines[1]["lr"] < lines[0]["lr"]  # poly decay
    ckpt = trained / "checkpoints" / "last"
    assert {p.name for p in ckpt.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    results = json.loads((trained / "eval" / "results.json").read_text())
    assert list(results["datasets"]) == ["synthetic-fog"] and 0 <= results["datasets"]["synthetic-fog"]["mIoU"] <= 100


def test_train_and_eval_with_the_mask2former_head(synthetic_root, tmp_path):
    args = sets(
        f"data.root={synthetic_root}",
        "model.head=mask2former",
        "model.rein.token_length=20",
        "data.eval=['synthetic-snow']",
    )
    assert rein("train", *args, "--iters", 2, "--out", tmp_path / "run", "--no-progress") == 0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert "d8.loss_dice" in lines[-1] and np.isfinite(lines[-1]["loss"])
    results = json.loads((tmp_path / "run" / "eval" / "results.json").read_text())
    assert 0 <= results["datasets"]["synthetic-snow"]["mIoU"] <= 100


@pytest.mark.parametrize("method", ["frozen", "full"])
def test_train_the_baselines(synthetic_root, tmp_path, method):
    args = sets(f"data.root={synthetic_root}", "data.eval=[]")
    assert (
        rein(
            "train",
            *args,
            "--method",
            method,
            "--head",
            "fpn",
            "--iters",
            1,
            "--out",
            tmp_path / "run",
            "--no-progress",
        )
        == 0
    )
    ckpt = tmp_path / "run" / "checkpoints" / "last"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"]["method"] == method and config["backbone_in_checkpoint"] is True
    keys = set(load_file(str(ckpt / "model.safetensors")))
    assert not any(k.startswith("backbone.reins") for k in keys)


def test_existing_run_dir_is_never_overwritten(trained, capsys):
    assert rein("train", *sets(), "--out", trained) == 1
    assert "already exists and is not empty" in errors(capsys)


def test_a_corrupt_training_image_in_a_worker_is_one_line(synthetic_root, tmp_path, capsys):

    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "synthetic", data / "synthetic")
    bad = data / "synthetic" / "images" / "train" / "000003.jpg"
    bad.write_bytes(b"not a jpeg")
    args = sets(f"data.root={data}", "data.num_workers=1", "data.eval=[]", "data.batch_size=8")
    assert rein("train", *args, "--iters", 2, "--out", tmp_path / "run", "--no-progress") == 1
    last = errors(capsys).splitlines()[-1]  # after the log lines: the error, on one line
    assert last.startswith("error: cannot read image") and str(bad) in last and "Traceback" not in last
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_without_a_terminal_training_prints_plain_progress_lines(synthetic_root, tmp_path, capsys, monkeypatch):
    from rein_cli import progress

    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.01)
    args = sets(f"data.root={synthetic_root}", "data.eval=[]")
    assert rein("train", *args, "--iters", 3, "--out", tmp_path / "run", "--no-progress") == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("training ")]
    assert lines, "no progress line"
    pattern = r"training [0-3]/3( loss \d+\.\d{3} lr \S+)?(( \d+\.\d+ (s/it|it/s) ETA \S+)| done in \S+)?"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert re.fullmatch(r"training 3/3 loss \d+\.\d{3} lr \S+ done in \d+s", lines[-1]), lines[-1]


def test_a_run_directory_in_use_is_refused(synthetic_root, tmp_path, capsys):
    from rein_cli.engine.runs import RunLock

    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run):  # another live run holds it
        args = sets(f"data.root={synthetic_root}", "data.eval=[]")
        assert rein("train", *args, "--iters", 1, "--out", run, "--no-progress") == 1
        assert f"{run} is in use by another run (pid " in errors(capsys)
    assert [p.name for p in run.iterdir()] == [".lock"]  # nothing written by the refused run
    assert rein("train", *sets(f"data.root={synthetic_root}", "data.eval=[]"), "--iters", 1, "--out", run) == 0


def test_evaluation_datasets_are_checked_before_training(tmp_path, capsys):
    from . import fake_datasets as fake

    src = fake.custom(tmp_path / "mine", {"train": 2, "val": 1}, [0, 1, 2], "classes: [a, b, c]\n")
    root = tmp_path / "root"
    assert rein("data", "prepare", "custom", "--from", src, "--name", "three", "--data-root", root) == 0
    args = sets(f"data.root={root}", "data.train=three", "model.num_classes=3")  # data.eval left at synthetic
    assert rein("train", *args, "--iters", 1000, "--out", tmp_path / "run") == 1
    err = errors(capsys)
    assert "evaluation dataset synthetic has 19 classes but the model 3" in err and "data.eval=[three]" in err
    assert not (tmp_path / "run").exists()  # refused before a single iteration
