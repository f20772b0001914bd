"""The shift analysis: IoU drops per class and grown confusions on hand-computed matrices, and the choice of source."""

from __future__ import annotations

import math

import pytest

from rein_cli.engine.results import ClassScore, DatasetResult, Evaluation
from rein_cli.engine.shift import (
    ClassDrop,
    GrownConfusion,
    class_drops,
    grown_confusions,
    row_shares,
    shift,
    source_for,
)
from rein_cli.errors import ReinError

NAN = math.nan


def entry(ious: dict[str, float], confusion: list[list[int]] | None = None, **fields) -> DatasetResult:
    per_class = {c: ClassScore(v, v) for c, v in ious.items()}
    return DatasetResult(images=4, mIoU=50.0, mAcc=60.0, aAcc=70.0, per_class=per_class, confusion=confusion, **fields)


# Rows: the true class, columns: the prediction. c has no pixels on the source.
SOURCE_CM = [[8, 2, 0], [1, 9, 0], [0, 0, 0]]  # shares a: 80 20 0, b: 10 90 0, c: undefined
TARGET_CM = [[5, 1, 4], [3, 6, 1], [0, 2, 8]]  # shares a: 50 10 40, b: 30 60 10, c: 0 20 80
SOURCE = entry({"a": 70.0, "b": 80.0, "c": NAN}, SOURCE_CM, trained_on=True)
TARGET = entry({"a": 40.0, "b": 85.0, "c": 50.0}, TARGET_CM)


def test_row_shares_are_percent_of_the_true_class_and_nan_without_pixels():
    shares = row_shares(TARGET_CM)
    assert shares[0] == pytest.approx([50.0, 10.0, 40.0]) and shares[1] == pytest.approx([30.0, 60.0, 10.0])
    assert all(math.isnan(v) for v in row_shares(SOURCE_CM)[2])


def test_class_drops_sorted_largest_first_with_nan_classes_apart():
    drops, undefined = class_drops(SOURCE, TARGET)
    assert drops == (ClassDrop("a", 70.0, 40.0), ClassDrop("b", 80.0, 85.0))
    assert [d.drop for d in drops] == [30.0, -5.0]  # b got better: a negative drop, last
    assert [d.name for d in undefined] == ["c"] and math.isnan(undefined[0].source) and undefined[0].target == 50.0


def test_grown_confusions_off_diagonal_by_growth_top_n():
    grown = grown_confusions(SOURCE, TARGET)
    # a->b shrank (20 -> 10); the diagonal never counts; c's row has no source pixels: no share to compare.
    assert grown == (
        GrownConfusion("a", "c", 0.0, 40.0),
        GrownConfusion("b", "a", 10.0, 30.0),
        GrownConfusion("b", "c", 0.0, 10.0),
    )
    assert [g.growth for g in grown] == pytest.approx([40.0, 20.0, 10.0])
    assert grown_confusions(SOURCE, TARGET, top=2) == grown[:2]
    assert grown_confusions(SOURCE, SOURCE) == ()  # nothing grew against itself
    assert grown_confusions(SOURCE, entry({"a": 1.0, "b": 2.0, "c": 3.0})) == ()  # no matrix: none


def test_shift_names_both_and_refuses_other_classes_or_no_labels():
    result = shift(SOURCE, TARGET, ("gta5", "cityscapes"))
    assert (result.source, result.target) == ("gta5", "cityscapes")
    assert result.drops[0].name == "a" and result.confusions[0].predicted == "c"
    with pytest.raises(ReinError, match="gta5 and other have different classes"):
        shift(SOURCE, entry({"a": 1.0, "b": 2.0}), ("gta5", "other"))
    with pytest.raises(ReinError, match="unlabeled has no metrics"):
        shift(SOURCE, DatasetResult(images=3), ("gta5", "unlabeled"))
    with pytest.raises(ReinError, match="not 3 x 3"):
        grown_confusions(SOURCE, entry({"a": 1.0, "b": 2.0, "c": 3.0}, [[1, 2], [3, 4]]))


def test_source_is_the_first_training_dataset_evaluated_else_the_references():
    target, other = entry({"a": 1.0}), entry({"a": 2.0}, trained_on=True)
    corrupted = entry({"a": 3.0}, trained_on=True, dataset="gta5", corruption="fog", severity=1)
    results = Evaluation(datasets={"c/fog-1": corrupted, "bdd": target, "gta5": SOURCE, "synthia": other})
    assert source_for(results) == ("gta5", SOURCE)  # corrupted copies are never a source
    alone = Evaluation(datasets={"bdd": target})
    assert source_for(alone) is None
    reference = Evaluation(datasets={"map": entry({"a": 4.0}), "gta5": SOURCE})
    assert source_for(alone, reference) == ("gta5", SOURCE)
    untrained = Evaluation(datasets={"test": DatasetResult(images=2), "map": target})
    assert source_for(alone, untrained) == ("map", target)  # no training dataset: its first with metrics
    assert source_for(alone, Evaluation(datasets={"test": DatasetResult(images=2)})) is None
