"""The domain shift between two evaluated datasets of one label space: which classes lost IoU from the source (the
training domain) to a target, and which confusions grew; and which dataset of an evaluation is the source.

Pure functions over typed results (`rein_cli.engine.results`); the shift report (report.html) shows them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rein_cli.engine.results import DatasetResult, Evaluation
from rein_cli.errors import ReinError

TOP_CONFUSIONS = 10


@dataclass(frozen=True)
class ClassDrop:
    """One class's IoU (percent) on the source and the target, and the drop ``source - target`` (NaN when either
    is NaN: the class is absent from that dataset's labels and predictions)."""

    name: str
    source: float
    target: float

    @property
    def drop(self) -> float:
        return self.source - self.target


@dataclass(frozen=True)
class GrownConfusion:
    """Pixels of the true class ``true`` predicted as ``predicted``: their share of the true class's pixels (percent)
    on the source and the target, and its growth in percentage points (``target - source``)."""

    true: str
    predicted: str
    source: float
    target: float

    @property
    def growth(self) -> float:
        return self.target - self.source


@dataclass(frozen=True)
class Shift:
    """A target against the source: the classes by IoU drop (largest first), the classes without an IoU on either
    side (in class order), and the confusions that grew most (largest growth first)."""

    source: str
    target: str
    drops: tuple[ClassDrop, ...]
    undefined: tuple[ClassDrop, ...]
    confusions: tuple[GrownConfusion, ...]


def check_comparable(
    source: DatasetResult, target: DatasetResult, names: tuple[str, str] = ("source", "target")
) -> None:
    """An error naming both datasets unless both have metrics over the same classes, in the same order."""
    for name, entry in zip(names, (source, target), strict=True):
        if not entry.labeled:
            raise ReinError(f"{name} has no metrics (a split without labels); compare datasets evaluated with labels")
    if list(source.per_class) != list(target.per_class):
        raise ReinError(
            f"{names[0]} and {names[1]} have different classes ({len(source.per_class)} and "
            f"{len(target.per_class)}, or another order); compare datasets of one label space"
        )


def class_drops(source: DatasetResult, target: DatasetResult) -> tuple[tuple[ClassDrop, ...], tuple[ClassDrop, ...]]:
    """Each class's IoU drop from ``source`` to ``target``, largest first (ties in class order); the classes with a
    NaN IoU on either side apart, in class order."""
    check_comparable(source, target)
    rows = [ClassDrop(c, source.per_class[c].IoU, target.per_class[c].IoU) for c in source.per_class]
    defined = [r for r in rows if not math.isnan(r.drop)]
    undefined = tuple(r for r in rows if math.isnan(r.drop))
    return tuple(sorted(defined, key=lambda r: -r.drop)), undefined


def row_shares(confusion: list[list[int]]) -> list[list[float]]:
    """A (K, K) confusion matrix (rows the label, columns the prediction) normalised by its rows: each cell's share
    of its true class's pixels, in percent; a row without pixels is NaN throughout."""
    shares = []
    for row in confusion:
        total = sum(row)
        shares.append([100.0 * v / total if total > 0 else math.nan for v in row])
    return shares


def grown_confusions(
    source: DatasetResult, target: DatasetResult, top: int = TOP_CONFUSIONS
) -> tuple[GrownConfusion, ...]:
    """The ``top`` off-diagonal confusions whose share of the true class's pixels grew most from ``source`` to
    ``target`` (largest growth first, ties in matrix order); only those that grew, and only true classes with pixels
    in both datasets. Empty when either has no confusion matrix."""
    check_comparable(source, target)
    if source.confusion is None or target.confusion is None:
        return ()
    classes = list(source.per_class)
    for name, cm in (("source", source.confusion), ("target", target.confusion)):
        if len(cm) != len(classes) or any(len(row) != len(classes) for row in cm):
            raise ReinError(f"the {name}'s confusion matrix is not {len(classes)} x {len(classes)}; evaluate it again")
    before, after = row_shares(source.confusion), row_shares(target.confusion)
    grown = [
        GrownConfusion(classes[i], classes[j], before[i][j], after[i][j])
        for i in range(len(classes))
        for j in range(len(classes))
        if i != j and not math.isnan(before[i][j]) and not math.isnan(after[i][j]) and after[i][j] > before[i][j]
    ]
    return tuple(sorted(grown, key=lambda g: -g.growth)[:top])


def shift(source: DatasetResult, target: DatasetResult, names: tuple[str, str], top: int = TOP_CONFUSIONS) -> Shift:
    """``target`` against ``source`` (``names``: theirs): IoU drops per class and the confusions that grew."""
    check_comparable(source, target, names)
    drops, undefined = class_drops(source, target)
    return Shift(names[0], names[1], drops, undefined, grown_confusions(source, target, top))


def source_for(results: Evaluation, reference: Evaluation | None = None) -> tuple[str, DatasetResult] | None:
    """The dataset a shift is measured from: the first dataset of ``results`` marked ``trained_on`` (the model's
    training dataset, evaluated in the same run), else ``reference``'s first such dataset or its first dataset with
    metrics, else None. Corrupted copies and datasets without metrics are never a source."""

    def candidates(evaluation: Evaluation) -> list[tuple[str, DatasetResult]]:
        return [(n, e) for n, e in evaluation.datasets.items() if e.labeled and e.corruption is None]

    trained = [(n, e) for n, e in candidates(results) if e.trained_on]
    if trained:
        return trained[0]
    if reference is None:
        return None
    scored = candidates(reference)
    trained = [(n, e) for n, e in scored if e.trained_on]
    return (trained or scored or [None])[0]
