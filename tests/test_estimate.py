"""Label-free estimators against hand-computed thresholds, their calibration split and calibrated synthetic models."""

import math

import numpy as np
import pytest
import torch

from rein_cli.engine.estimate import (
    ScoreStats,
    atc_threshold,
    error_structure,
    estimate,
    estimate_on_source,
    measured,
    share_above,
)
from rein_cli.engine.metrics import iou_from_confusion
from rein_cli.errors import ReinError

K, B = 5, 1000


def random_source(rng: np.random.Generator, classes: int = K, bins: int = 50) -> ScoreStats:
    """Sparse random histograms (many empty bins) and a confusion matrix over the same pixels: class 3 labeled but
    never predicted, class 4 neither labeled nor predicted, class 2 never wrong."""
    hist = np.where(rng.random((classes, bins)) < 0.3, rng.integers(1, 40, (classes, bins)), 0).astype(float)
    hist[3:] = 0
    confusion = np.zeros((classes, classes))
    for c in range(classes):
        if c == 2:
            confusion[c, c] = hist[c].sum()
        elif hist[c].sum():
            confusion[: classes - 1, c] = rng.multinomial(int(hist[c].sum()), [0.6, 0.2, 0.1, 0.1][: classes - 1])
    second = hist[:, ::-1].copy()  # another score over the same pixels
    return ScoreStats({"max_prob": hist, "neg_entropy": second}, confusion)


def neg_entropy(s: np.ndarray) -> np.ndarray:
    """1 - H(p) / log K for p = (s, and the rest spread evenly over the other classes)."""
    rest = (1 - s) / (K - 1)
    h = -(s * np.log(s) + (K - 1) * rest * np.log(np.maximum(rest, 1e-300)))
    return 1 - h / np.log(K)


def calibrated(rng: np.random.Generator, n: int, confidence) -> ScoreStats:
    """A calibrated model's statistics: each pixel's max probability s ~ ``confidence``, right with probability s,
    otherwise its true class is one of the others at random."""
    pred = rng.choice(K, n, p=[0.4, 0.25, 0.15, 0.12, 0.08])
    s = confidence(n)
    true = np.where(rng.random(n) < s, pred, (pred + rng.integers(1, K, n)) % K)
    hist = {}
    for name, score in (("max_prob", s), ("neg_entropy", neg_entropy(s))):
        hist[name] = np.zeros((K, B))
        np.add.at(hist[name], (pred, np.minimum((score * B).astype(int), B - 1)), 1)
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (true, pred), 1)
    return ScoreStats(hist, confusion)


def test_threshold_by_hand():
    counts = np.array([1.0, 1.0, 2.0, 0.0])  # bins [0, .25) [.25, .5) [.5, .75) [.75, 1]
    assert atc_threshold(counts, 0.25) == pytest.approx(0.625)  # one of the two pixels spread over [.5, .75)
    assert atc_threshold(counts, 0.5) == pytest.approx(0.5)
    assert atc_threshold(counts, 1.0) == pytest.approx(0.0)
    assert atc_threshold(counts, 0.0) == pytest.approx(0.875)  # any t in the empty [.75, 1]: its middle
    assert share_above(counts, 0.3) == pytest.approx((2 + 1 * 0.8) / 4)  # 80% of bin 1 lies above 0.3
    gap = np.array([2.0, 0.0, 0.0, 2.0])
    assert atc_threshold(gap, 0.5) == pytest.approx(0.5)  # any t in [.25, .75]
    assert atc_threshold(gap, 0.75) == pytest.approx(0.125)  # one of bin 0's two pixels above
    with pytest.raises(ReinError, match="non-empty"):
        atc_threshold(np.zeros(4), 0.5)


@pytest.mark.parametrize("seed", range(5))
def test_threshold_gives_back_its_share(seed):
    rng = np.random.default_rng(seed)
    counts = np.where(rng.random(30) < 0.4, rng.integers(1, 9, 30), 0).astype(float)
    counts[rng.integers(30)] += 1  # never empty
    for share in [0.0, 1.0, *rng.random(20)]:
        assert share_above(counts, atc_threshold(counts, share)) == pytest.approx(share, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_on_its_calibration_split_atc_gives_back_the_measured_accuracy_and_iou(seed):
    source = random_source(np.random.default_rng(seed))
    truth = iou_from_confusion(torch.tensor(source.confusion))
    found = estimate_on_source(source)
    for name in ("ATC-MC", "ATC-NE", "DoC"):
        assert found[name].value == pytest.approx(truth["aAcc"], abs=1e-9), name
    assert found["DoC mIoU"].value == pytest.approx(truth["mIoU"], abs=1e-9)
    assert measured(source) == pytest.approx({"aAcc": truth["aAcc"], "mIoU": truth["mIoU"]}, abs=1e-9)
    for name in ("ATC-MC per class", "ATC-NE per class", "DoC per class"):
        per_class = found[name].per_class
        assert np.allclose(per_class, truth["IoU"], atol=1e-6, equal_nan=True), name
        assert math.isnan(per_class[4]) and per_class[3] == 0.0  # nowhere; labeled but never predicted
        assert found[name].value == pytest.approx(truth["mIoU"], abs=1e-6)
    assert found["ATC-MC per class"].calibration["source_precision"][2] == 100.0


def test_calibrated_model_under_a_shift_of_easy_and_hard_pixels():
    """Easy pixels (s near 1) and hard ones (s uniform on [1/K, 1]); the target has fewer easy ones. Calibrated,
    AC and DoC are right in expectation; ATC too, since its threshold does not depend on the mix (docs/analysis.md)."""
    rng = np.random.default_rng(0)

    def mix(easy: float):
        return lambda n: np.where(rng.random(n) < easy, rng.uniform(0.999, 1.0, n), rng.uniform(1 / K, 1.0, n))

    source, target = calibrated(rng, 200_000, mix(0.7)), calibrated(rng, 200_000, mix(0.35))
    truth = measured(target)
    assert measured(source)["aAcc"] - truth["aAcc"] > 10  # a real shift
    found = estimate(source, target)
    for name in ("ATC-MC", "ATC-NE", "AC", "DoC"):
        assert found[name].value == pytest.approx(truth["aAcc"], abs=1.0), name
    for name in ("ATC-MC per class", "ATC-NE per class", "AC per class", "DoC per class"):
        assert found[name].value == pytest.approx(truth["mIoU"], abs=1.0), name
    assert found["ATC-MC"].calibration["threshold"] == pytest.approx(0.52, abs=0.01)  # (1 - t) / (1 - 1/K) = 0.6


def test_calibrated_model_under_a_shift_of_all_confidences():
    """Every pixel less confident (Beta(5, 1.5) -> Beta(2, 2) on [1/K, 1]), still calibrated: AC and DoC stay right;
    ATC's share above the source's threshold falls much faster than the accuracy (its documented limit)."""
    rng = np.random.default_rng(1)

    def beta(a: float, b: float):
        return lambda n: 1 / K + (1 - 1 / K) * rng.beta(a, b, n)

    source, target = calibrated(rng, 200_000, beta(5, 1.5)), calibrated(rng, 200_000, beta(2, 2))
    truth = measured(target)
    found = estimate(source, target)
    for name in ("AC", "DoC"):
        assert found[name].value == pytest.approx(truth["aAcc"], abs=1.0), name
    assert truth["aAcc"] - found["ATC-MC"].value > 10


def test_error_structure_and_false_negatives_by_hand():
    confusion = np.array([[5, 1, 0], [3, 4, 0], [1, 0, 2]])  # rows true, columns predicted
    m = error_structure(confusion)
    # predicted 0 wrongly: 3 times true 1, once true 2; predicted 1 wrongly: once true 0; predicted 2: never wrong
    assert np.allclose(m, [[0, 0.75, 0.25], [1, 0, 0], [0.5, 0.5, 0]])
    source = ScoreStats({"max_prob": np.diag(confusion.sum(0)).astype(float)}, confusion)  # 3 bins, one per class
    found = estimate_on_source(source)["ATC-MC per class"]
    tp = np.diag(confusion)
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    assert np.allclose(found.per_class, 100 * tp / (tp + fp + fn))


def test_all_correct_source_and_classes_never_predicted():
    counts = np.zeros((3, 10))
    counts[0, 9], counts[1, 8] = 40, 10  # source: scores in [.8, 1], always right; class 2 never predicted
    source = ScoreStats({"max_prob": counts}, np.diag(counts.sum(1)))
    assert estimate_on_source(source)["ATC-MC"].value == 100.0
    target_counts = np.zeros((3, 10))
    target_counts[0, 2], target_counts[0, 9], target_counts[2, 6] = 30, 50, 20  # class 1 never predicted
    found = estimate(source, ScoreStats({"max_prob": target_counts}))
    atc = found["ATC-MC"]
    assert atc.calibration["threshold"] == pytest.approx(0.4)  # the middle of [0, 0.8]
    assert atc.value == pytest.approx(100 * (50 + 20) / 100)
    per_class = found["ATC-MC per class"]
    assert per_class.calibration["thresholds"][2] == pytest.approx(0.4)  # never predicted: the whole source's
    # class 0: 30 of 80 wrong, spread evenly to 1 and 2; class 2 all right: IoU_0 = 50/80, IoU_1 = 0, IoU_2 = 20/35
    assert per_class.per_class == pytest.approx([100 * 50 / 80, 0.0, 100 * 20 / 35])
    assert all(0 <= e.value <= 100 for e in found.values())


def test_refusals():
    source = random_source(np.random.default_rng(0))
    empty = ScoreStats({"max_prob": np.zeros((K, 50))})
    with pytest.raises(ReinError, match="no pixels"):
        estimate(source, empty)
    with pytest.raises(ReinError, match="no labeled pixels"):
        estimate(ScoreStats({"max_prob": np.zeros((K, 50))}, np.zeros((K, K))), source)
    with pytest.raises(ReinError, match="no confusion matrix"):
        estimate(ScoreStats(source.hist), source)
    with pytest.raises(ReinError, match="5 classes and the target 3"):
        estimate(source, ScoreStats({"max_prob": np.ones((3, 50))}))
    with pytest.raises(ReinError, match="labeled pixels only"):
        ScoreStats(source.hist, source.confusion + np.eye(K))
    with pytest.raises(ReinError, match="count different pixels"):
        ScoreStats({"max_prob": np.ones((K, 4)), "neg_entropy": np.ones((K, 5))})
    with pytest.raises(ReinError, match='"max_prob"; collected: neg_entropy'):
        estimate(source, ScoreStats({"neg_entropy": np.ones((K, 50))}))
    only_mc = estimate(source, ScoreStats({"max_prob": source.hist["max_prob"]}))
    assert "ATC-MC" in only_mc and "ATC-NE" not in only_mc and "ATC-NE per class" not in only_mc
