"""Per-image statistics and the bootstrap intervals built on them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from rein_cli.engine.bootstrap import (
    mean_interval,
    miou_interval,
    paired_difference,
    resample_weights,
    resampled_miou,
)
from rein_cli.engine.evaluate import evaluate
from rein_cli.engine.imagestats import BINS, ImageStats, read_image_stats
from rein_cli.engine.metrics import iou_from_confusion
from rein_cli.engine.results import read_results

from .helpers import odd_folder, rein, tiny_segmentor


def stats(intersect, label, pred, images=None) -> ImageStats:
    intersect, label, pred = (np.asarray(a, dtype=np.int64) for a in (intersect, label, pred))
    names = images or [f"{i}.jpg" for i in range(len(intersect))]
    return ImageStats(names, intersect, label, pred, np.zeros(len(names)), {}, {}, True)


# Two images, two classes. a: class 0 only, all right (mIoU 100). b: half of its class-0 pixels predicted as class
# 1 and all of its class-1 pixels right: IoU0 = 0/5, IoU1 = 5/10, mIoU 25. Both together: IoU0 = 10/15, IoU1 = 5/10.
TWO = stats([[10, 0], [0, 5]], [[10, 0], [5, 5]], [[10, 0], [0, 10]])


def test_two_images_by_hand():
    values = resampled_miou(TWO, np.array([[2, 0], [1, 1], [0, 2]]))
    assert values == pytest.approx([100, 100 * (10 / 15 + 0.5) / 2, 25])
    # the resamples are {a, a}, {a, b} and {b, b} with probabilities 1/4, 1/2, 1/4: the central 95% spans all three
    weights = resample_weights(2, 4000, np.random.default_rng(0))
    assert (weights.sum(1) == 2).all()
    assert np.mean(weights[:, 0] == 1) == pytest.approx(0.5, abs=0.03)
    found = miou_interval(TWO, resamples=1000, seed=3)
    assert (found.low, found.high, found.resamples, found.seed) == (25.0, 100.0, 1000, 3)
    assert miou_interval(TWO, seed=3) == found  # seeded: the same interval again


def test_the_interval_matches_the_large_sample_normal_approximation():
    rng = np.random.default_rng(1)
    n, k = 600, 3
    label = rng.integers(50, 150, size=(n, k))
    intersect = (label * rng.uniform(0.3, 0.9, size=(n, k))).astype(np.int64)
    pred = intersect + rng.integers(0, 60, size=(n, k))
    data = stats(intersect, label, pred)
    # delta method: mIoU = mean_c I_c / U_c; each image's influence sum_c (I_ic - R_c U_ic) / (K U_c)
    union = label + pred - intersect
    ratio = intersect.sum(0) / union.sum(0)
    influence = ((intersect - ratio * union) / union.sum(0)).sum(1) / k
    se = 100 * math.sqrt((influence**2).sum())
    estimate = 100 * ratio.mean()
    found = miou_interval(data, resamples=4000, seed=0)
    assert found.low == pytest.approx(estimate - 1.96 * se, abs=0.15 * se)
    assert found.high == pytest.approx(estimate + 1.96 * se, abs=0.15 * se)
    assert found.high - found.low == pytest.approx(2 * 1.96 * se, rel=0.08)


def test_mean_and_paired_intervals():
    rng = np.random.default_rng(2)
    label = rng.integers(20, 80, size=(50, 4))
    a = stats(label - 5, label, label + 5)
    b = stats(label - 10, label, label + 3, a.images)
    mean = mean_interval([a, b], resamples=500)
    assert mean.low < (resampled_miou(a, np.ones((1, 50)))[0] + resampled_miou(b, np.ones((1, 50)))[0]) / 2
    diff, paired = paired_difference([[a]], [[b]], resamples=500)
    assert diff > 0 and 0 < paired.low <= diff <= paired.high
    same, zero = paired_difference([[a]], [[a]], resamples=100)
    assert (same, zero.low, zero.high) == (0.0, 0.0, 0.0)
    # seeds pooled: each model's figure the mean over its seeds, the images drawn alike for all of them
    pooled, both = paired_difference([[a], [a]], [[b], [b]], resamples=500)
    assert pooled == pytest.approx(diff) and (both.low, both.high) == pytest.approx((paired.low, paired.high))
    with pytest.raises(ValueError, match="same images"):
        paired_difference([[a]], [[stats(label, label, label, [f"other{i}.jpg" for i in range(50)])]], resamples=10)


def test_each_image_recorded_as_the_protocol_defines(synthetic_root, tmp_path):
    folder = odd_folder(synthetic_root, tmp_path / "odd")
    model = tiny_segmentor()
    results = evaluate(
        model, [str(folder)], data_dir=synthetic_root, out=tmp_path / "out", mode="whole", progress=False
    )
    recorded = read_image_stats(tmp_path / "out" / "images.npz")["odd"]
    assert recorded.images == [
        item["image"] for item in json.loads((folder / "manifest.json").read_text())["splits"]["val"]
    ]
    for i, name in enumerate(recorded.images):  # one image at a time, from its definition
        rgb = np.asarray(Image.open(folder / name).convert("RGB"))
        gt = np.asarray(Image.open(folder / recorded.images[i].replace("images", "labels").replace(".jpg", ".png")))
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255 - torch.tensor(model.mean).view(3, 1, 1)
        x = x / torch.tensor(model.std).view(3, 1, 1)
        with torch.no_grad():
            scores = model.semantic_scores(x[None])
        pred = scores.argmax(1)[0].numpy()
        keep = gt != 255
        p, g = pred[keep], gt[keep]
        assert (recorded.intersect[i] == np.bincount(g[p == g], minlength=19)).all()
        assert (recorded.label_area[i] == np.bincount(g, minlength=19)).all()
        assert (recorded.pred_area[i] == np.bincount(p, minlength=19)).all()
        probs = scores / scores.sum(1, keepdim=True)
        assert recorded.confidence[i] == pytest.approx(float(probs.amax(1).mean()), rel=1e-5)
    confusion = torch.tensor(results.datasets["odd"].confusion)
    assert (recorded.intersect.sum(0) == confusion.diag().numpy()).all()
    assert (recorded.pred_area.sum(0) == confusion.sum(0).numpy()).all()
    assert resampled_miou(recorded, np.ones((1, 5)))[0] == pytest.approx(iou_from_confusion(confusion)["mIoU"])
    pixels = sum(
        np.asarray(Image.open(folder / n)).shape[0] * np.asarray(Image.open(folder / n)).shape[1]
        for n in recorded.images
    )
    assert recorded.hist["max_prob"].shape == (19, BINS) and recorded.hist["max_prob"].sum() == pixels
    assert (recorded.hist["neg_entropy"].sum(1) == recorded.pred_area.sum(0)).all()  # no unlabeled pixel here
    # results.json carries the interval and the worst images, their pictures beside it
    written = read_results(tmp_path / "out" / "results.json")
    entry = written.datasets["odd"]
    assert entry.interval is not None and entry.interval.low <= entry.mIoU <= entry.interval.high
    assert written.mean_interval is not None
    mious = recorded.image_miou()
    assert [c.mIoU for c in entry.worst] == pytest.approx(sorted(mious)[: len(entry.worst)])
    for case in entry.worst:
        assert set(case.files) == {"image", "label", "prediction", "errors"}
        assert all((tmp_path / "out" / f).is_file() for f in case.files.values())


def test_compare_gives_paired_intervals_on_the_same_images(synthetic_root, tmp_path, capsys):
    from rein_cli.engine.compare import MEAN, compare
    from rein_cli.engine.compare_report import format_markdown

    targets = ["synthetic-fog", "synthetic-night"]
    options = {"data_dir": synthetic_root, "mode": "whole", "progress": False, "trained_on": ["synthetic"]}
    model = tiny_segmentor()
    evaluate(model, targets, out=tmp_path / "a", **options)
    with torch.no_grad():  # a second model: the same with its head's classifier disturbed
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    evaluate(model, targets, out=tmp_path / "b", **options)
    table = compare([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"])
    found = {d.column: d for d in table.differences}
    assert set(found) == {"synthetic-fog", "synthetic-night", MEAN}
    a, b = (read_image_stats(tmp_path / name / "images.npz") for name in "ab")
    for column in targets:
        d = found[column]
        assert (d.a, d.b) == ("a", "b")
        expected = table.rows[0].cells[column].mean - table.rows[1].cells[column].mean
        assert d.value == pytest.approx(expected, abs=1e-9)  # the bootstrap's point is the difference of the mIoUs
        assert d.interval.low <= d.value <= d.interval.high
        again = paired_difference([[a[column]]], [[b[column]]])
        assert (again[1].low, again[1].high) == (d.interval.low, d.interval.high)
        assert d.clear == (d.interval.low > 0 or d.interval.high < 0)
    assert "## Paired differences" in format_markdown(table)
    assert rein("compare", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}", "--out", tmp_path / "cmp") == 0
    printed = capsys.readouterr().out
    assert "paired differences on the same images" in printed
    assert f"a - b  synthetic-fog  {found['synthetic-fog'].value:+.2f}" in printed
    (tmp_path / "b" / "images.npz").unlink()  # an evaluation without the images: no paired interval, a note
    table = compare([f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"])
    assert table.differences == ()
    assert any(n.startswith("no paired intervals for 1 of 2 inputs: no images.npz") for n in table.notes)
