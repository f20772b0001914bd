"""How sure an mIoU is: percentile bootstrap intervals over images (Efron & Tibshirani, "An Introduction to the
Bootstrap", 1993, ch. 13), for one dataset, the domain-generalisation mean over several, and the paired difference
of two models on the same images.

A resample draws a dataset's N images N times with replacement (the draw counts of `resample_weights`); its mIoU is
computed exactly from the summed per-class intersection, label and prediction areas of the drawn images
(`rein_cli.engine.imagestats`), as the dataset's own mIoU is from its confusion matrix. The interval is the 2.5th
and 97.5th percentiles of the resampled values: it says how much the figure would move with another sample of
images like these, not with other kinds of images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from rein_cli.engine.imagestats import ImageStats, _miou
from rein_cli.engine.results import Interval

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95


def resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) how often each of ``n`` images is drawn in each resample (each row sums to ``n``)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)


def resampled_miou(stats: ImageStats, weights: np.ndarray) -> np.ndarray:
    """(R,) the dataset's mIoU (percent) in each resample of ``weights`` (R, N)."""
    w = weights.astype(np.float64)
    return _miou(w @ stats.intersect, w @ stats.label_area, w @ stats.pred_area)


def interval(values: np.ndarray, resamples: int, seed: int) -> Interval:
    """The central `LEVEL` percentile interval of resampled ``values``."""
    values = values[~np.isnan(values)]
    if not len(values):
        return Interval(math.nan, math.nan, resamples, seed)
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high), resamples, seed)


def _checked(stats: ImageStats, what: str) -> ImageStats:
    if not stats.labeled or not len(stats):
        raise ValueError(f"{what} has no labeled images to resample")
    return stats


def miou_interval(stats: ImageStats, resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """A dataset's mIoU interval."""
    weights = resample_weights(len(_checked(stats, "the dataset")), resamples, np.random.default_rng(seed))
    return interval(resampled_miou(stats, weights), resamples, seed)


def mean_interval(datasets: Sequence[ImageStats], resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """The interval of the plain mean of several datasets' mIoU, each dataset's images resampled on their own."""
    rng = np.random.default_rng(seed)
    per_dataset = [resampled_miou(s, resample_weights(len(_checked(s, "a dataset")), resamples, rng)) for s in datasets]
    return interval(np.mean(per_dataset, axis=0), resamples, seed)


def paired_difference(
    a: Sequence[Sequence[ImageStats]],
    b: Sequence[Sequence[ImageStats]],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> tuple[float, Interval]:
    """The difference of two models' mean mIoU and its paired interval. ``a`` and ``b``: for each seed of a model,
    one `ImageStats` per dataset (the same datasets in the same order everywhere, each with the same images in the
    same order); a model's figure is the mean over its seeds and the datasets. Each resample draws the same images
    for every seed of both models."""
    first = a[0]
    for side in (*a, *b):
        if len(side) != len(first) or any(s.images != f.images for s, f in zip(side, first, strict=True)):
            raise ValueError("a paired difference needs the same images on both sides")
    rng = np.random.default_rng(seed)
    diffs, point = [], []
    for d, stats in enumerate(first):
        weights = resample_weights(len(_checked(stats, "a dataset")), resamples, rng)
        ones = np.ones((1, len(stats)))
        for w, into in ((weights, diffs), (ones, point)):
            mean_a = np.mean([resampled_miou(side[d], w) for side in a], axis=0)
            mean_b = np.mean([resampled_miou(side[d], w) for side in b], axis=0)
            into.append(mean_a - mean_b)
    return float(np.mean(point)), interval(np.mean(diffs, axis=0), resamples, seed)
