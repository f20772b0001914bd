"""The command line: a train -> eval -> predict smoke run on tiny settings, and clear errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from rein_cli.cli import run
from rein_cli.engine.metrics import confusion_matrix, iou_from_confusion

from .conftest import TINY_SETS


def rein(*args: str) -> int:
    """Run the CLI in-process; returns the exit code."""
    try:
        run([str(a) for a in args])
    except SystemExit as exit_:
        return exit_.code or 0
    return 0


def sets(*extra: str) -> list[str]:
    return [x for s in (*TINY_SETS, *extra) for x in ("--set", s)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = rein("train", *sets(f"data.root={synthetic_root}", "data.eval=['synthetic-fog']"), "--iters", 3, "--out", out,
                "--no-progress")  # fmt: skip
    assert code == 0
    return out


def test_train_writes_a_complete_run(trained):
    assert (trained / "config.yaml").is_file()
    lines = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in lines)
    assert lines[1]["lr"] < lines[0]["lr"]  # poly decay
    ckpt = trained / "checkpoints" / "last"
    assert {p.name for p in ckpt.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    results = json.loads((trained / "eval" / "results.json").read_text())
    assert list(results["datasets"]) == ["synthetic-fog"] and 0 <= results["datasets"]["synthetic-fog"]["mIoU"] <= 100


def test_eval_and_predict_agree(trained, synthetic_root, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    code = rein("eval", ckpt, "--data", "synthetic-night", "--data", "synthetic", "--data-root", synthetic_root,
                "--mode", "whole", "--out", tmp_path / "ev", "--no-progress")  # fmt: skip
    assert code == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert list(results["datasets"]) == ["synthetic-night", "synthetic"]
    table = capsys.readouterr().out
    assert "synthetic-night" in table and "mIoU" in table and "road" in table

    images = synthetic_root / "synthetic-night" / "images" / "val"
    assert rein("predict", ckpt, images, "--out", tmp_path / "pred", "--mode", "whole", "--no-progress") == 0
    labels = sorted((tmp_path / "pred" / "labels").glob("*.png"))
    assert len(labels) == 4
    assert len(list((tmp_path / "pred" / "color").glob("*.png"))) == 4
    assert len(list((tmp_path / "pred" / "overlay").glob("*.jpg"))) == 4
    cm = 0
    for label in labels:
        pred = np.asarray(Image.open(label))
        truth = np.asarray(Image.open(synthetic_root / "synthetic-night" / "labels" / "val" / label.name))
        assert pred.shape == truth.shape == (64, 128) and pred.max() < 19
        cm = cm + confusion_matrix(torch.from_numpy(pred.copy()), torch.from_numpy(truth.copy()), 19)
    expected = results["datasets"]["synthetic-night"]["mIoU"]
    assert iou_from_confusion(cm)["mIoU"] == pytest.approx(expected)  # predict's files reproduce eval's number


def test_predict_a_single_file_with_resize(trained, synthetic_root, tmp_path):
    image = synthetic_root / "synthetic" / "images" / "val" / "000001.jpg"
    assert rein("predict", trained / "checkpoints" / "last", image, "--out", tmp_path, "--size", "64x32", "--no-progress") == 0
    assert Image.open(tmp_path / "labels" / "000001.png").size == (128, 64)  # back at the input's resolution


def test_version_and_help_are_fast_and_light():
    out = subprocess.run([sys.executable, "-m", "rein_cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("rein 0.")
    check = "import sys, rein_cli.cli; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0


def errors(capsys) -> str:
    return capsys.readouterr().err.strip()


def test_unknown_names_suggest_the_closest(tmp_path, capsys):
    assert rein("train", "--data", "synthetc", "--out", tmp_path / "r") == 1
    err = errors(capsys)
    assert err.startswith('error: unknown dataset "synthetc" (did you mean "synthetic"?)') and "\n" not in err
    assert rein("train", "--backbone", "dinov2-xl", *sets(), "--out", tmp_path / "r") == 1
    assert 'unknown backbone "dinov2-xl" (did you mean "dinov2-l"?)' in errors(capsys)
    assert not (tmp_path / "r").exists()  # nothing written


def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    assert rein("predict", ckpt, tmp_path / "missing.png", "--out", tmp_path / "o") == 1
    err = errors(capsys)
    assert err.startswith("error: input not found:") and "missing.png" in err
    (tmp_path / "empty").mkdir()
    assert rein("predict", ckpt, tmp_path / "empty", "--out", tmp_path / "o") == 1
    assert "no images" in errors(capsys)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert rein("predict", ckpt, tmp_path / "broken.png", "--out", tmp_path / "o") == 1
    assert "cannot read image" in errors(capsys) and not (tmp_path / "o").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    image = trained.parent / "img.png"
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(image)
    assert rein("predict", ckpt, image, "--out", blocker / "sub", "--mode", "whole") == 1
    assert "cannot write" in errors(capsys)
    assert rein("eval", tmp_path, "--data", "synthetic") == 1
    assert "not a rein checkpoint" in errors(capsys)
    assert rein("train", "--set", "optim.lrr=1") == 1
    assert 'did you mean "optim.lr"' in errors(capsys)


def test_existing_run_dir_is_never_overwritten(trained, capsys):
    assert rein("train", *sets(), "--out", trained) == 1
    assert "already exists and is not empty" in errors(capsys)


def test_debug_shows_the_traceback(tmp_path):
    cmd = [sys.executable, "-m", "rein_cli", "--debug", "predict", str(tmp_path), str(tmp_path / "x.png")]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode != 0 and "Traceback" in out.stderr
    out = subprocess.run(cmd[:3] + cmd[4:], capture_output=True, text=True)
    assert out.returncode == 1 and "Traceback" not in out.stderr and out.stderr.startswith("error:")


def test_a_corrupt_training_image_in_a_worker_is_one_line(synthetic_root, tmp_path, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "synthetic", data / "synthetic")
    bad = data / "synthetic" / "images" / "train" / "000003.jpg"
    bad.write_bytes(b"not a jpeg")
    args = sets(f"data.root={data}", "data.num_workers=1", "data.eval=[]", "data.batch_size=8")
    assert rein("train", *args, "--iters", 2, "--out", tmp_path / "run", "--no-progress") == 1
    last = errors(capsys).splitlines()[-1]  # after the log lines: the error, on one line
    assert last.startswith("error: cannot read image") and str(bad) in last and "Traceback" not in last
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_train_and_eval_with_the_mask2former_head(synthetic_root, tmp_path):
    args = sets(
        f"data.root={synthetic_root}", "model.head=mask2former", "model.rein.token_length=20", "data.eval=['synthetic-snow']"
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
        rein("train", *args, "--method", method, "--head", "fpn", "--iters", 1, "--out", tmp_path / "run", "--no-progress") == 0
    )
    ckpt = tmp_path / "run" / "checkpoints" / "last"
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"]["method"] == method and config["backbone_in_checkpoint"] is True
    keys = set(load_file(str(ckpt / "model.safetensors")))
    assert not any(k.startswith("backbone.reins") for k in keys)
