"""Label-free estimates of a model's pixel accuracy and mIoU on an unlabeled target: ATC, DoC, average confidence.

Pure numpy, on per-dataset statistics (`ScoreStats`): for each predicted class a histogram of per-pixel confidence
scores, and for the labeled source (calibration) split its confusion matrix. docs/analysis.md ("Estimating without
labels") gives every formula, its paper and its limits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from rein_cli.documents import Fields
from rein_cli.errors import ReinError

SCORES = ("max_prob", "neg_entropy")  # the maximum class probability; 1 - H(p) / log K; both in [0, 1], 1 = certain
ATC_NAMES = {"max_prob": "ATC-MC", "neg_entropy": "ATC-NE"}
# per metric, the estimator with the smallest largest error over the four conditions of the embedded benchmark
# (benchmarks/estimate_accuracy.py; docs/analysis.md): one model and one benchmark, a default, not a law
RECOMMENDED = {"aAcc": "AC", "mIoU": "AC per class"}
CITATIONS = {
    "garg2022atc": "S. Garg, S. Balakrishnan, Z. C. Lipton, B. Neyshabur, H. Sedghi. Leveraging Unlabeled Data to "
    "Predict Out-of-Distribution Performance. ICLR 2022.",
    "guillory2021doc": "D. Guillory, V. Shankar, S. Ebrahimi, T. Darrell, L. Schmidt. Predicting with Confidence on "
    "Unseen Distributions. ICCV 2021.",
    "hendrycks2017baseline": "D. Hendrycks, K. Gimpel. A Baseline for Detecting Misclassified and Out-of-Distribution "
    "Examples in Neural Networks. ICLR 2017.",
}
CITED = {"garg2022atc": "Garg et al., ICLR 2022", "guillory2021doc": "Guillory et al., ICCV 2021",
         "hendrycks2017baseline": "Hendrycks and Gimpel, ICLR 2017"}  # fmt: skip


@dataclass(frozen=True)
class ScoreStats:
    """What an evaluation collects on one dataset for the estimators.

    ``hist``: score name (`SCORES`) -> (K, B) pixel counts: row c holds the pixels *predicted* c, over B equal bins
    of [0, 1] (bin i covers [i/B, (i+1)/B), 1.0 falls in the last bin). ``confusion``: (K, K) counts, rows = true
    class, columns = predicted class, on the labeled source only; the source's histograms must count the same
    pixels (the labeled ones), so each hist row sums to the confusion's column.
    """

    hist: Mapping[str, np.ndarray]
    confusion: np.ndarray | None = None

    def __post_init__(self) -> None:
        hist = {name: np.asarray(counts, dtype=np.float64) for name, counts in self.hist.items()}
        if not hist:
            raise ReinError("score statistics without any histogram; expected one per score of " + ", ".join(SCORES))
        shapes = {name: counts.shape for name, counts in hist.items()}
        if any(len(s) != 2 or s[1] < 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) > 1:
            raise ReinError(f"score histograms must be (classes, bins) arrays with the same classes; got {shapes}")
        first, predicted = next(iter(hist)), next(iter(hist.values())).sum(1)
        for name, counts in hist.items():
            if not np.isfinite(counts).all() or (counts < 0).any():
                raise ReinError(f'score histogram "{name}" has negative or non-finite counts')
            if not np.allclose(counts.sum(1), predicted, rtol=1e-9, atol=1e-6):
                raise ReinError(f'score histograms "{first}" and "{name}" count different pixels per predicted class')
        object.__setattr__(self, "hist", hist)
        if self.confusion is None:
            return
        confusion, k = np.asarray(self.confusion, dtype=np.float64), len(predicted)
        if confusion.shape != (k, k) or not np.isfinite(confusion).all() or (confusion < 0).any():
            raise ReinError(f"the confusion matrix must be ({k}, {k}) non-negative counts; got shape {confusion.shape}")
        if not np.allclose(predicted, confusion.sum(0), rtol=1e-9, atol=1e-6):
            raise ReinError(
                "the score histograms do not count the confusion matrix's pixels (predicted pixels per class differ); "
                "collect the calibration split's histograms over its labeled pixels only"
            )
        object.__setattr__(self, "confusion", confusion)

    @property
    def num_classes(self) -> int:
        return next(iter(self.hist.values())).shape[0]

    def counts(self, score: str = "max_prob") -> np.ndarray:
        """(K, B) pixel counts of ``score``; a clear error when the score was not collected."""
        if score not in self.hist:
            raise ReinError(f'no histogram of the score "{score}"; collected: {", ".join(sorted(self.hist))}')
        return self.hist[score]

    def predicted(self, score: str = "max_prob") -> np.ndarray:
        """(K,) pixels predicted as each class."""
        return self.counts(score).sum(1)

    def mean_score(self, score: str = "max_prob") -> np.ndarray:
        """(K,) mean score of the pixels predicted as each class, from the bin centres; NaN where none."""
        counts = self.counts(score)
        with np.errstate(invalid="ignore", divide="ignore"):
            return counts @ _centres(counts) / counts.sum(1)

    def overall_mean(self, score: str = "max_prob") -> float:
        """Mean score over all pixels, from the bin centres; NaN without pixels."""
        counts = self.counts(score)
        total = counts.sum()
        return float((counts @ _centres(counts)).sum() / total) if total else math.nan

    def labeled(self) -> np.ndarray:
        """The (K, K) confusion matrix; a clear error on a dataset without labels."""
        if self.confusion is None:
            raise ReinError("the calibration statistics have no confusion matrix; calibrate on a labeled split")
        return self.confusion

    def accuracy(self) -> float:
        """Pixel accuracy as a fraction: correct / labeled pixels; NaN without labeled pixels."""
        confusion = self.labeled()
        total = confusion.sum()
        return float(np.trace(confusion) / total) if total else math.nan

    def precision(self) -> np.ndarray:
        """(K,) per predicted class: the share of its pixels that are right; NaN for a class never predicted."""
        confusion = self.labeled()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.diag(confusion) / confusion.sum(0)


@dataclass(frozen=True)
class Estimate:
    """One estimate of a target's metric: ``value`` in percent (NaN where undefined), what calibrated it, its paper.

    ``calibration``: what the source gave (``threshold`` / ``thresholds``, ``source_accuracy`` in percent, ...);
    ``per_class``: the estimated per-class IoU in percent for the mIoU estimators (NaN for a class with an empty
    estimated union), None for the accuracy estimators."""

    method: str
    metric: Literal["aAcc", "mIoU"]
    value: float
    citation: str
    calibration: Mapping[str, float | list[float]]
    per_class: list[float] | None = None

    def to_json(self) -> dict:
        data = {"method": self.method, "metric": self.metric, "value": self.value, "citation": self.citation}
        data["calibration"] = dict(self.calibration)
        if self.per_class is not None:
            data["per_class"] = list(self.per_class)
        return data

    @classmethod
    def read(cls, f: Fields) -> Estimate:
        """An estimate as results.json holds it, every value checked (null figures are NaN)."""
        calibration = f.object("calibration")
        return cls(
            f.text("method"),
            _metric(f),
            f.number("value", null=True),
            f.text("citation"),
            {
                k: calibration.numbers(k) if isinstance(v, list) else calibration.number(k, null=True)
                for k, v in calibration.data.items()
            },
            f.numbers("per_class", None, null=True),
        )


def _metric(f: Fields) -> Literal["aAcc", "mIoU"]:
    metric = f.text("metric")
    if metric not in ("aAcc", "mIoU"):
        raise f.error("metric", '"aAcc" or "mIoU"', metric)
    return metric  # type: ignore[return-value]


def share_above(counts: np.ndarray, threshold: float) -> float:
    """Share of the (B,) histogram's pixels with a score above ``threshold``, pixels spread evenly within a bin."""
    bins, total = len(counts), counts.sum()
    if not total:
        return math.nan
    j = min(int(threshold * bins), bins - 1)  # the bin that holds the threshold
    above = counts[j + 1 :].sum() + counts[j] * ((j + 1) - threshold * bins)
    return float(min(max(above / total, 0.0), 1.0))


def atc_threshold(counts: np.ndarray, share: float) -> float:
    """The score t with ``share_above(counts, t) == share`` (ATC's threshold), pixels spread evenly within a bin.

    Where empty bins make a whole interval of such t, its middle. A clear error on an empty histogram."""
    bins, total = len(counts), counts.sum()
    if not total or not 0.0 <= share <= 1.0:
        raise ReinError(f"no ATC threshold for share {share} of {total:g} pixels; calibrate on a non-empty split")
    above = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # (B + 1,) pixels at or above each bin edge
    goal, tol = share * total, 1e-9 * total
    hi = int(np.flatnonzero(above >= goal - tol)[-1])  # the last edge with enough pixels above it
    lo = int(np.flatnonzero(above <= goal + tol)[0])  # the first edge with no more than enough
    highest = 1.0 if hi == bins else (hi + 1 - (goal - above[hi + 1]) / counts[hi]) / bins
    lowest = 0.0 if lo == 0 else (lo - (goal - above[lo]) / counts[lo - 1]) / bins
    highest, lowest = min(max(highest, hi / bins), 1.0), max(min(lowest, lo / bins), 0.0)
    return (lowest + highest) / 2


def iou(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[float, list[float]]:
    """mIoU and per-class IoU in percent: IoU_c = TP / (TP + FP + FN), NaN where the union is empty and left out of
    the mean (as rein_cli.engine.metrics.iou_from_confusion)."""
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(union > 0, 100 * tp / union, np.nan)
    return (float(np.nanmean(per_class)) if (union > 0).any() else math.nan), per_class.tolist()


def measured(stats: ScoreStats) -> dict[str, float]:
    """The labeled dataset's own aAcc and mIoU in percent, from its confusion matrix."""
    confusion = stats.labeled()
    tp = np.diag(confusion)
    return {"aAcc": 100 * stats.accuracy(), "mIoU": iou(tp, confusion.sum(0) - tp, confusion.sum(1) - tp)[0]}


def error_structure(confusion: np.ndarray) -> np.ndarray:
    """(K, K) M[c', c]: the share of the wrong predictions of c' whose true class is c (the diagonal is 0).

    A class the source never predicts wrongly spreads its errors evenly over the other classes."""
    k = len(confusion)
    wrong = confusion.T * (1 - np.eye(k))  # (K, K) [predicted, true], errors only
    per_prediction = wrong.sum(1, keepdims=True)
    even = (1 - np.eye(k)) / max(k - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(per_prediction > 0, wrong / per_prediction, even)


def per_class_miou(precision: np.ndarray, predicted: np.ndarray, errors: np.ndarray) -> tuple[float, list[float]]:
    """mIoU from each predicted class's estimated precision (K,) on the target, its predicted pixels (K,) and the
    source's error structure (K, K): TP = p P, FP = P - TP, FN_c = sum over c' of FP_c' M[c', c]."""
    tp = np.where(predicted > 0, np.clip(precision, 0.0, 1.0) * predicted, 0.0)
    fp = predicted - tp
    return iou(tp, fp, fp @ errors)


def estimate(source: ScoreStats, target: ScoreStats) -> dict[str, Estimate]:
    """Every estimate of the target's aAcc and mIoU, calibrated on the labeled ``source``, by method name.

    Needs the ``max_prob`` histograms; ATC-NE and ATC-NE per class also need ``neg_entropy`` on both sides. A source
    without labeled pixels, a target without pixels, or different class counts are a ReinError."""
    if source.num_classes != target.num_classes:
        raise ReinError(f"the source has {source.num_classes} classes and the target {target.num_classes}")
    if not source.labeled().sum():
        raise ReinError("the calibration split has no labeled pixels; nothing to calibrate on")
    if not target.predicted().sum():
        raise ReinError("the target's histograms count no pixels; nothing to estimate")
    found = [*accuracy_estimates(source, target), *miou_estimates(source, target)]
    return {e.method: e for e in found}


def accuracy_estimates(source: ScoreStats, target: ScoreStats) -> list[Estimate]:
    """AC, DoC, and ATC for each score both sides have: the target's pixel accuracy in percent."""
    acc, confidence = source.accuracy(), source.overall_mean()
    doc = acc - (confidence - target.overall_mean())
    found = [
        Estimate("AC", "aAcc", 100 * target.overall_mean(), "hendrycks2017baseline", {}),
        Estimate("DoC", "aAcc", 100 * min(max(doc, 0.0), 1.0), "guillory2021doc",
                 {"source_accuracy": 100 * acc, "source_confidence": 100 * confidence}),
    ]  # fmt: skip
    for score in _shared_scores(source, target):
        threshold = atc_threshold(source.counts(score).sum(0), acc)
        value = 100 * share_above(target.counts(score).sum(0), threshold)
        calibration = {"source_accuracy": 100 * acc, "threshold": threshold}
        found.append(Estimate(ATC_NAMES[score], "aAcc", value, "garg2022atc", calibration))
    return found


def miou_estimates(source: ScoreStats, target: ScoreStats) -> list[Estimate]:
    """DoC mIoU, and the per-class estimators (AC, DoC, ATC for each score): the target's mIoU in percent.

    Each estimates every predicted class's precision on the target; a class the source never predicts is calibrated
    by the whole source (its accuracy, mean confidence and ATC threshold)."""
    acc, truth, predicted = source.accuracy(), measured(source), target.predicted()
    errors = error_structure(source.labeled())
    precision = np.where(np.isnan(source.precision()), acc, source.precision())  # (K,)
    confidence = np.where(np.isnan(source.precision()), source.overall_mean(), source.mean_score())  # (K,)
    calibrated = {"source_accuracy": 100 * acc, "source_precision": (100 * precision).tolist()}
    shift = 100 * (source.overall_mean() - target.overall_mean())
    found = [
        Estimate("DoC mIoU", "mIoU", min(max(truth["mIoU"] - shift, 0.0), 100.0), "guillory2021doc",
                 {"source_miou": truth["mIoU"], "source_confidence": 100 * source.overall_mean()}),
    ]  # fmt: skip
    for name, citation, estimated, extra in (
        ("AC per class", "hendrycks2017baseline", target.mean_score(), {}),
        ("DoC per class", "guillory2021doc", precision - (confidence - target.mean_score()),
         {"source_confidence": (100 * confidence).tolist()}),
    ):  # fmt: skip
        value, per_class = per_class_miou(estimated, predicted, errors)
        found.append(Estimate(name, "mIoU", value, citation, {**calibrated, **extra}, per_class))
    for score in _shared_scores(source, target):
        fallback = atc_threshold(source.counts(score).sum(0), acc)
        rows = zip(source.counts(score), precision, strict=True)
        thresholds = [atc_threshold(row, p) if row.sum() else fallback for row, p in rows]
        rows = zip(target.counts(score), thresholds, strict=True)
        estimated = np.array([share_above(row, t) for row, t in rows])  # NaN for a class the target never predicts
        value, per_class = per_class_miou(estimated, predicted, errors)
        name = f"{ATC_NAMES[score]} per class"
        found.append(Estimate(name, "mIoU", value, "garg2022atc", {**calibrated, "thresholds": thresholds}, per_class))
    return found


def _centres(counts: np.ndarray) -> np.ndarray:
    """(B,) the centres of the histogram's bins."""
    return (np.arange(counts.shape[1]) + 0.5) / counts.shape[1]


def _shared_scores(source: ScoreStats, target: ScoreStats) -> list[str]:
    return [score for score in ATC_NAMES if score in source.hist and score in target.hist]


def estimate_on_source(source: ScoreStats) -> dict[str, Estimate]:
    """The estimators applied to their own calibration split: a sanity check (ATC returns the source's aAcc exactly,
    ATC per class its per-class IoU, DoC its aAcc and mIoU)."""
    return estimate(source, source)
