"""The charts as figure objects: value labels, no-IoU classes and empty confusion rows marked, the comparison's axis
scaled to its figures with error bars only over seeds and the source domain hatched, the demo's mIoU legend, and
the labelled prediction strip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rein_cli.demo import miou_chart
from rein_cli.engine.charts import (
    CELL_VALUES_UP_TO,
    NO_VALUE,
    confusion_chart,
    headroom,
    iou_chart,
    labelled_strip,
    shorten,
)
from rein_cli.engine.compare import MEAN, Cell, Comparison, Row
from rein_cli.engine.compare_report import chart
from rein_cli.engine.results import DatasetResult, Evaluation


def texts(figure) -> list[str]:
    return [t.get_text() for ax in figure.axes for t in ax.texts]


def legend_texts(figure) -> list[str]:
    legends = [*figure.legends, *(ax.get_legend() for ax in figure.axes if ax.get_legend())]
    return [t.get_text() for legend in legends for t in legend.get_texts()]


def test_iou_chart_writes_each_value_and_marks_no_iou_apart_from_zero():
    figure = iou_chart("fog", ["road", "wall", "train", "car"], [61.25, 0.0, math.nan, None], 30.6)
    ax = figure.axes[0]
    assert texts(figure) == ["61.2", "0.0", NO_VALUE, NO_VALUE]  # every class has its figure or n/a
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert sorted(round(p.get_x() + p.get_width() / 2) for p in hatched) == [2, 3]  # the no-IoU classes only
    zero = next(p for p in ax.patches if round(p.get_x() + p.get_width() / 2) == 1)
    assert zero.get_height() == 0.0 and not zero.get_hatch()  # a real 0.0 stays a (flat) bar
    assert any("neither label nor prediction" in t for t in legend_texts(figure))
    assert any("mIoU 30.60" in t for t in legend_texts(figure))
    plain = iou_chart("clear", ["road", "car"], [50.0, 0.0], 25.0)
    assert NO_VALUE not in texts(plain) and not any(p.get_hatch() for p in plain.axes[0].patches)


def test_confusion_chart_writes_row_percents_and_marks_a_class_without_pixels():
    confusion = [[3, 1, 0], [0, 0, 0], [0, 2, 2]]  # rows: the label; "wall" has no ground-truth pixels
    figure = confusion_chart("fog", ["road", "wall", "car"], confusion)
    ax = figure.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert {k: t.get_text() for k, t in cells.items()} == {(0, 0): "75", (0, 1): "25", (2, 1): "50", (2, 2): "50"}
    assert cells[(0, 0)].get_color() != cells[(0, 1)].get_color()  # dark text on the light cell, light on the dark
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks == ["road", "wall (no pixels)", "car"]
    row = [p for p in ax.patches if p.get_hatch()]
    assert len(row) == 1 and row[0].get_y() == pytest.approx(0.5) and row[0].get_width() == 3
    image = ax.images[0].get_array()
    assert np.ma.getmaskarray(image)[1].all() and not np.ma.getmaskarray(image)[[0, 2]].any()  # not a row of zeros


def test_confusion_chart_without_figures_for_many_classes():
    k = CELL_VALUES_UP_TO + 1
    figure = confusion_chart("big", [f"c{i}" for i in range(k)], np.eye(k, dtype=int).tolist())
    assert len(figure.axes[0].texts) == 0


def table(rows: list[tuple[str, int, dict[str, Cell]]], targets: tuple[str, ...]) -> Comparison:
    """A comparison built by hand: (label, seeds, cells) per row; a row's seeds are only counted by the chart."""
    return Comparison("val", targets, tuple(Row(label, (object(),) * n, cells, 1.0) for label, n, cells in rows))


def bars_of(figure) -> list:
    return [p for p in figure.axes[0].patches if p.get_height() > 0]


def test_compare_axis_follows_the_figures():
    low = chart(table([("a", 1, {"x": Cell((8.0,)), MEAN: Cell((8.0,))})], ("x",)))
    high = chart(table([("a", 1, {"x": Cell((64.0,)), MEAN: Cell((64.0,))})], ("x",)))
    assert 8.0 < low.axes[0].get_ylim()[1] < 15.0  # a small figure fills the axis, not 8% of a 0-100 one
    assert 64.0 < high.axes[0].get_ylim()[1] < 100.0
    paper = chart(table([("a", 1, {"x": Cell((8.0,), paper=60.0), MEAN: Cell((8.0,))})], ("x",)))
    assert paper.axes[0].get_ylim()[1] > 60.0  # the paper's diamond stays on the axis
    assert texts(low) == ["8.0", "8.0"]  # each bar's figure written above it
    assert headroom([1000.0]) > 1000.0 and headroom([]) == 1.0 and headroom([90.0, math.nan]) == 105.0


def test_compare_error_bars_only_for_rows_of_several_seeds():
    cells = {"x": Cell((10.0, 12.0)), "y": Cell((5.0,)), MEAN: Cell((11.0, 13.0))}  # y: one of the two seeds has it
    rows = [("seeds", 2, cells), ("single", 1, {"x": Cell((9.0,)), "y": Cell(()), MEAN: Cell((9.0,))})]
    figure = chart(table(rows, ("x", "y")))
    ax = figure.axes[0]
    errors = [c for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
    assert len(errors) == 1  # the one row with seeds
    segments = errors[0].lines[2][0].get_segments()
    assert len(segments) == 2  # x and the DG mean, not y (one value)
    assert [s[1][1] - s[0][1] for s in segments] == pytest.approx([2 * math.sqrt(2)] * 2)  # ± the sample std
    legend = legend_texts(figure)
    assert "seeds (2 seeds)" in legend and "single" in legend
    assert any("± sample std (n - 1)" in t and "n seeds" in t for t in legend)
    assert NO_VALUE in texts(figure)  # the single row's missing y
    single = chart(table([rows[1]], ("x", "y")))
    assert not [c for c in single.axes[0].containers if type(c).__name__ == "ErrorbarContainer"]
    assert not any("std" in t for t in legend_texts(single))


def test_compare_marks_the_source_domain_and_shortens_long_labels():
    long = "rein dinov2-l model.rein.rank=4 model.rein.link=false model.head.num_queries="
    rows = [
        (long + "50", 1, {"citys": Cell((70.0,), trained_on=True), "bdd": Cell((50.0,)), MEAN: Cell((50.0,))}),
        (long + "100", 1, {"citys": Cell((60.0,)), "bdd": Cell((45.0,)), MEAN: Cell((45.0,))}),
    ]
    figure = chart(table(rows, ("citys", "bdd")))
    hatched = [p for p in bars_of(figure) if p.get_hatch()]
    assert [p.get_height() for p in hatched] == [70.0]  # only the first row's training dataset
    assert "70.0\nsource" in texts(figure) and "60.0" in texts(figure)
    legend = legend_texts(figure)
    assert any(t.startswith("source") for t in legend)
    labels = legend[:2]
    assert all(len(t) <= 48 and "\n" not in t for t in labels) and len(set(labels)) == 2
    assert labels[0].startswith("rein dinov2-l") and labels[0].endswith("num_queries=50")


def test_shorten_keeps_both_ends():
    assert shorten("short") == "short"
    text = "a" * 30 + "-middle-" + "z" * 30
    assert len(shorten(text, 20)) == 20 and shorten(text, 20).startswith("aaa") and shorten(text, 20).endswith("zzz")


def test_miou_chart_gives_the_mean_its_value_in_the_legend():
    values = {"synthetic": 13.1, "synthetic-fog": 9.3, "synthetic-night": 6.4}
    datasets = {n: DatasetResult(images=2, mIoU=v, trained_on=n == "synthetic") for n, v in values.items()}
    results = Evaluation(datasets=datasets, mean_mIoU=7.85, mean_of=["synthetic-fog", "synthetic-night"])
    figure = miou_chart(results)
    ax = figure.axes[0]
    assert "DG mean 7.85 (2 conditions)" in legend_texts(figure)
    assert texts(figure) == ["13.1", "9.3", "6.4"]  # each bar's figure; the mean's label is in the legend
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clear (source)", "fog", "night"]
    colours = [tuple(p.get_facecolor()) for p in ax.patches]
    assert colours[0] != colours[1] == colours[2]  # the source bar apart
    assert ax.get_ylim()[1] < 20.0


def test_labelled_strip_adds_labels_and_a_legend_around_the_tiles():
    tiles = [np.full((40, 60, 3), colour, np.uint8) for colour in ((200, 10, 90), (100, 100, 100), (50, 50, 50))]
    rows = [tiles, tiles]
    legend = [("road", (128, 64, 128)), ("sky", (70, 130, 180))]
    strip = labelled_strip(
        rows, row_labels=["clear", "fog"], column_labels=["image", "prediction", "truth"], legend=legend
    )
    height, width = strip.shape[:2]
    assert width > 3 * 60 and height > 2 * 40 + 12  # labels left and above, the legend below
    below = strip[-(height - 2 * 40) // 2 :]  # the legend's band at the bottom
    for _, colour in legend:
        assert (below == colour).all(-1).any()  # each swatch drawn
    assert (strip[:, :20] < 100).all(-1).any()  # row labels: dark text left of the tiles
    assert (strip == (200, 10, 90)).all(-1).sum() == 2 * 40 * 60  # the first column's tiles pasted whole
    bare = labelled_strip(rows, row_labels=["a", "b"], column_labels=["1", "2", "3"])
    assert bare.shape[0] < height  # no legend, no legend band
