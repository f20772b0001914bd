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
    a: Sequence[ImageStats], b: Sequence[ImageStats], resamples: int = RESAMPLES, seed: int = SEED
) -> tuple[float, Interval]:
    """The difference of the mean mIoU of ``a`` and of ``b`` (one `ImageStats` per dataset, the same images in the
    same order on both sides) and its paired interval: each resample draws the same images for both."""
    rng = np.random.default_rng(seed)
    diffs, point = [], []
    for sa, sb in zip(a, b, strict=True):
        if sa.images != sb.images:
            raise ValueError("a paired difference needs the same images on both sides")
        weights = resample_weights(len(_checked(sa, "a dataset")), resamples, rng)
        diffs.append(resampled_miou(sa, weights) - resampled_miou(sb, weights))
        ones = np.ones((1, len(sa)))
        point.append(float(resampled_miou(sa, ones)[0] - resampled_miou(sb, ones)[0]))
    return float(np.mean(point)), interval(np.mean(diffs, axis=0), resamples, seed)
