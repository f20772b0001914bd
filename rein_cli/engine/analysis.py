"""What an evaluation adds beside its figures: the per-image statistics written beside results.json (images.npz),
the pictures of each dataset's worst images, and the label-free estimates of each target calibrated on a labeled
source (`rein_cli.engine.estimate`)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from rein_cli.engine.estimate import ScoreStats, estimate
from rein_cli.engine.gallery import GALLERY, WORST, write_gallery
from rein_cli.engine.imagestats import write_image_stats
from rein_cli.engine.report import safe_name
from rein_cli.engine.results import Evaluation
from rein_cli.errors import ReinError

__all__ = ["WORST", "add_estimates", "write_analysis"]

log = logging.getLogger(__name__)


def write_analysis(results: Evaluation, out: Path) -> None:
    """``out/images.npz`` and, per clean labeled dataset, its worst images under ``out/gallery/<dataset>/`` (the
    entries' ``worst``)."""
    if not results.image_stats:
        return
    write_image_stats(results.image_stats, out)
    for key, stats in results.image_stats.items():
        entry, manifest = results.datasets.get(key), results.manifests.get(key)
        if entry is not None and manifest is not None and stats.worst:
            entry.worst = write_gallery(stats, manifest, stats.split, Path(GALLERY) / safe_name(key), Path(out))


def add_estimates(results: Evaluation, source: str) -> None:
    """Each clean dataset but ``source`` estimated without its labels (its confidence histograms over every pixel),
    calibrated on the labeled ``source`` (its histograms over the labeled pixels and its confusion matrix)."""
    entry, stats = results.datasets.get(source), results.image_stats.get(source)
    if entry is None or stats is None or not entry.labeled:
        raise ReinError(
            f"cannot calibrate the estimates on {source}: its {results.split} split has no labels; name a labeled "
            "dataset with --calibrate-on NAME"
        )
    calibration = ScoreStats(stats.hist_labeled, np.asarray(entry.confusion, dtype=np.int64))
    for key, target in results.datasets.items():
        if key != source and target.corruption is None and key in results.image_stats:
            found = estimate(calibration, ScoreStats(results.image_stats[key].hist))
            target.estimates = tuple(found.values())
    results.calibrated_on = source
