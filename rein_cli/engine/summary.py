"""What an evaluation's figures add up to: the domain-generalisation mean, the corruption protocol's summary, and
the bootstrap intervals of each dataset's mIoU and of the mean."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from rein_cli.engine.bootstrap import RESAMPLES, mean_interval, miou_interval
from rein_cli.engine.metrics import dg_mean
from rein_cli.engine.results import Corruption, CorruptionSummary, DatasetResult, Evaluation, reported_for


def add_mean(results: Evaluation) -> None:
    """``mean_mIoU`` (and mAcc, aAcc) with ``mean_of``, the datasets that entered it: every evaluated dataset with
    metrics except the training datasets (marked ``trained_on`` in each entry), or all when all are."""
    scored = results.scored()
    excluded = {name for name, entry in scored.items() if entry.trained_on}
    names: list[str] = []
    for key in ("mIoU", "mAcc", "aAcc"):
        mean, names = dg_mean({name: getattr(entry, key) for name, entry in scored.items()}, excluded)
        setattr(results, f"mean_{key}", mean)
    results.mean_of = names
    if scored and excluded and set(names) == set(scored):
        results.mean_note = "every evaluated dataset is a training dataset: the mean is over all of them"
    elif excluded:
        results.mean_note = f"left out (training datasets): {', '.join(n for n in scored if n in excluded)}"
    else:
        results.mean_note = None


def corruption_summary(entries: Mapping[str, DatasetResult], spec: str, reported: Any = None) -> Corruption:
    """The summary of the corrupted entries (``<dataset>/<corruption>-<severity>``, with metrics): every figure the
    mIoU rounded to two decimals, a mean the mean of the rounded figures it is over, rounded to two decimals.
    ``reported``: the published figures of ``<dataset>-c`` (e.g. a release's ``cityscapes-c``), the mean over the
    whole protocol, put beside ours only when every corruption was evaluated at every severity."""
    from rein_cli.data.corruptions import CORRUPTIONS, SEVERITIES

    datasets: dict[str, CorruptionSummary] = {}
    for entry in entries.values():
        if entry.corruption is None or entry.mIoU is None or math.isnan(entry.mIoU):
            continue
        summary = datasets.setdefault(entry.dataset, CorruptionSummary(None, 0, {}))
        summary.per_corruption.setdefault(entry.corruption, {})[str(entry.severity)] = round(entry.mIoU, 2)
        summary.pairs += 1
    for name, summary in datasets.items():
        figures = []
        for levels in summary.per_corruption.values():
            values = [levels[k] for k in sorted(levels)]
            figures += values
            levels["mean"] = round(sum(values) / len(values), 2)
        summary.mIoU = round(sum(figures) / len(figures), 2)
        full = summary.pairs == len(CORRUPTIONS) * len(SEVERITIES)
        summary.reported = reported_for(reported, f"{name}-c") if full else ()
    return Corruption(spec, datasets)


def add_intervals(results: Evaluation, resamples: int = RESAMPLES) -> None:
    """Each labeled dataset's mIoU interval and the DG mean's (over ``mean_of``), from the images recorded, with
    ``resamples`` bootstrap resamples (0: none)."""
    if resamples <= 0:
        return
    stats = results.image_stats
    for key, entry in results.scored().items():
        if key in stats and stats[key].labeled and len(stats[key]):
            entry.interval = miou_interval(stats[key], resamples)
    over = [stats.get(name) for name in results.mean_of]
    if over and all(s is not None and s.labeled and len(s) for s in over):
        results.mean_interval = mean_interval(over, resamples)
