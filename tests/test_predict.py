"""Evaluation and prediction of a trained checkpoint: predicted files reproduce the evaluated mIoU."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from rein_cli.engine.metrics import confusion_matrix, iou_from_confusion

from .helpers import rein


def test_eval_and_predict_agree(trained, synthetic_root, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "last"
    code = rein(
        "eval",
        ckpt,
        "--data",
        "synthetic-night",
        "--data",
        "synthetic",
        "--data-root",
        synthetic_root,
        "--mode",
        "whole",
        "--out",
        tmp_path / "ev",
        "--no-progress",
    )
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
    assert (
        rein("predict", trained / "checkpoints" / "last", image, "--out", tmp_path, "--size", "64x32", "--no-progress")
        == 0
    )
    assert Image.open(tmp_path / "labels" / "000001.png").size == (128, 64)  # back at the input's resolution
