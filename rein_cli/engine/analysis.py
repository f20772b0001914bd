"""What an evaluation adds to its figures: the bootstrap intervals of each dataset's mIoU and of the DG mean, the
per-image statistics written beside results.json (images.npz) and the pictures of each dataset's worst images."""

from __future__ import annotations

import logging
from pathlib import Path

from rein_cli.engine.bootstrap import mean_interval, miou_interval
from rein_cli.engine.gallery import WORST, write_gallery
from rein_cli.engine.imagestats import write_image_stats
from rein_cli.engine.report import safe_name
from rein_cli.engine.results import Evaluation

__all__ = ["WORST", "add_intervals", "write_analysis"]

log = logging.getLogger(__name__)


def add_intervals(results: Evaluation) -> None:
    """Each labeled dataset's mIoU interval and the DG mean's (over ``mean_of``), from the images recorded."""
    stats = results.image_stats
    for key, entry in results.scored().items():
        if key in stats and stats[key].labeled and len(stats[key]):
            entry.interval = miou_interval(stats[key])
    over = [stats.get(name) for name in results.mean_of]
    if over and all(s is not None and s.labeled and len(s) for s in over):
        results.mean_interval = mean_interval(over)


def write_analysis(results: Evaluation, out: Path) -> None:
    """``out/images.npz`` and, per clean labeled dataset, its worst images under ``out/gallery/<dataset>/`` (the
    entries' ``worst``)."""
    if not results.image_stats:
        return
    write_image_stats(results.image_stats, out)
    for key, stats in results.image_stats.items():
        entry, manifest = results.datasets.get(key), results.manifests.get(key)
        if entry is not None and manifest is not None and stats.worst:
            entry.worst = write_gallery(stats, manifest, results.split, Path("gallery") / safe_name(key), Path(out))
