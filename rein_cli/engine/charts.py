"""Charts for people: IoU per class, the confusion matrix, the corruption heat map, and labelled prediction
strips. Each chart function returns a matplotlib `Figure` (the Agg canvas, without pyplot's global state) that
`save_figure` writes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rein_cli.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from rein_cli.engine.results import CorruptionSummary

CELL_VALUES_UP_TO = 25  # a confusion matrix with more classes than this has no figures written in its cells
NO_VALUE = "n/a"
NO_VALUE_COLOUR = "#9a9a9a"
NO_VALUE_HATCH = "///"
SOURCE_HATCH = "xx"


def save_figure(figure: Any, path: Path) -> Path:
    """A matplotlib figure as a PNG at ``path``, written atomically."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


def missing(value: float | None) -> bool:
    """No figure: None or NaN."""
    return value is None or math.isnan(value)


def headroom(values: Sequence[float | None], *, floor: float = 1.0) -> float:
    """An axis top that fits ``values`` with room for a value label over the tallest: 20% over the largest, but
    not far past 100 for figures near it (a percent), and at least ``floor``; missing values are skipped."""
    top = max([v for v in values if not missing(v)], default=0.0)
    return max(floor, min(top * 1.2, max(top * 1.1, 105.0)))


def text_colour(rgba: Sequence[float]) -> str:
    """Black on a light cell, white on a dark one (by the cell's relative luminance)."""
    r, g, b = rgba[:3]
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "white"


def shorten(text: str, width: int = 48) -> str:
    """``text`` in at most ``width`` characters: its start and end kept, the middle elided (``a b…y z``), so that
    labels differing only at the end stay distinct."""
    if len(text) <= width:
        return text
    head = (width - 1) * 3 // 5
    return text[:head].rstrip() + "…" + text[len(text) - (width - 1 - head) :].lstrip()


def iou_chart(name: str, classes: list[str], ious: list[float | None], miou: float) -> Figure:
    """A bar per class with its IoU written above; a class with no IoU (absent from both the labels and the
    predictions) gets a hatched grey column and ``n/a`` instead of a bar, so it never reads as 0.0."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    figure = Figure(figsize=(max(6.0, 0.5 * len(classes) + 1.5), 4.2), dpi=110, layout="constrained")
    ax = figure.add_subplot()
    for x, v in enumerate(ious):
        if missing(v):
            ax.bar(x, 100.0, 0.8, color="none", edgecolor=NO_VALUE_COLOUR, hatch=NO_VALUE_HATCH, linewidth=0)
            box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none"}
            ax.text(x, 1.5, NO_VALUE, ha="center", va="bottom", fontsize=7, color="#444444", bbox=box)
        else:
            ax.bar(x, v, 0.8, color="#4c72b0")
            ax.text(x, v + 1.0, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(0, 108)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("IoU (%)")
    ax.axhline(miou, color="#dd8452", linestyle="--", linewidth=1)
    handles = [Line2D([], [], color="#dd8452", linestyle="--", label=f"mIoU {miou:.2f}")]
    if any(missing(v) for v in ious):
        label = f"{NO_VALUE}: in neither label nor prediction"
        handles.append(Patch(facecolor="none", edgecolor=NO_VALUE_COLOUR, hatch=NO_VALUE_HATCH, label=label))
    figure.legend(handles=handles, fontsize=8, loc="outside upper right", ncols=len(handles), frameon=False)
    ax.set_title(f"{name}: IoU per class", fontsize=10, loc="left")
    return figure


def confusion_chart(name: str, classes: list[str], confusion: list[list[int]]) -> Figure:
    """The confusion matrix with rows normalised by the ground truth, in percent; up to `CELL_VALUES_UP_TO`
    classes the figure is written in every cell with pixels. A class without ground-truth pixels has a hatched grey
    row and ``(no pixels)`` on its label rather than a row of zeros."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    cm = np.asarray(confusion, dtype=np.float64)  # (K, K): rows the label, columns the prediction
    totals = cm.sum(1, keepdims=True)
    empty = totals[:, 0] == 0
    percent = np.divide(100.0 * cm, totals, out=np.full_like(cm, np.nan), where=totals > 0)
    size = max(5.0, 0.42 * len(classes) + 2.5)
    figure = Figure(figsize=(size + 1.2, size), dpi=110, layout="constrained")
    figure.get_layout_engine().set(w_pad=0.1, h_pad=0.1)  # inches: room for the axis labels' descenders
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(percent), vmin=0.0, vmax=100.0, cmap="viridis")
    for i in np.flatnonzero(empty):
        ax.add_patch(
            Rectangle(
                (-0.5, i - 0.5), len(classes), 1.0, facecolor="#dddddd", edgecolor="#9a9a9a", hatch="///", linewidth=0
            )
        )
    fontsize = min(10.0, max(6.0, 130.0 / max(1, len(classes))))  # larger cells, larger figures
    if len(classes) <= CELL_VALUES_UP_TO:
        for i, j in zip(*np.nonzero(cm), strict=True):
            p = percent[i, j]
            text = f"{p:.0f}" if p >= 0.5 else "<1"
            colour = text_colour(image.cmap(image.norm(p)))
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
    ticks = [f"{c} (no pixels)" if e else c for c, e in zip(classes, empty, strict=True)]
    ticksize = 8 if len(classes) <= 10 else 7
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=ticksize)
    ax.set_yticks(range(len(classes)), ticks, fontsize=ticksize)
    for tick, e in zip(ax.get_yticklabels(), empty, strict=True):
        if e:
            tick.set_color("#777777")
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{name}: confusion matrix (% of each ground-truth class's pixels)", fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.02, label="% of the row's pixels")
    return figure


def corruption_chart(dataset: str, summary: CorruptionSummary) -> Figure:
    """The mIoU of each corruption (rows) at each severity (columns) as a heat map, the figures written in."""
    from matplotlib.figure import Figure

    names, levels = list(summary.per_corruption), summary.levels
    grid = np.array([[summary.per_corruption[n].get(str(k), np.nan) for k in levels] for n in names], dtype=np.float64)
    figure = Figure(figsize=(1.1 * len(levels) + 3.0, 0.38 * len(names) + 1.6), dpi=110, layout="tight")
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), vmin=0.0, vmax=100.0, cmap="viridis", aspect="auto")
    for i in range(len(names)):
        for j in range(len(levels)):
            if not math.isnan(grid[i, j]):
                colour = text_colour(image.cmap(image.norm(grid[i, j])))
                ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(levels)), [str(k) for k in levels])
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("severity")
    mean = "-" if missing(summary.mIoU) else f"{summary.mIoU:.2f}"
    ax.set_title(f"{dataset}: mIoU per corruption (mean {mean})", fontsize=9)
    figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return figure


def labelled_strip(
    rows: Sequence[Sequence[np.ndarray]],
    *,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    legend: Sequence[tuple[str, Sequence[int]]] = (),
) -> np.ndarray:
    """Tiles ((H, W, 3) uint8; one height per row, one width per column) in a grid with thin white gaps, a label
    above each column, a label left of each row, and under the grid a legend of colour swatches with their names;
    returns the picture, (H, W, 3) uint8."""
    from PIL import Image, ImageDraw, ImageFont

    heights = [tiles[0].shape[0] for tiles in rows]
    widths = [tile.shape[1] for tile in rows[0]]
    size = max(12, min(heights) // 11)  # the font's, in pixels
    font = ImageFont.load_default(size=size)
    pad, gap = size // 2, max(2, size // 5)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def width_of(text: str) -> int:
        return math.ceil(measure.textlength(text, font=font))

    left = max(width_of(t) for t in row_labels) + 2 * pad
    top = size + 2 * pad
    xs = [left + sum(widths[:j]) + gap * j for j in range(len(widths))]  # each column's left edge
    ys = [top + sum(heights[:i]) + gap * i for i in range(len(heights))]  # each row's top edge
    total, below = xs[-1] + widths[-1], ys[-1] + heights[-1]
    lines: list[list[tuple[str, Sequence[int], int]]] = [[]]  # the legend's entries by line, with their x
    x = pad
    for name, colour in legend:
        step = size + pad // 2 + width_of(name) + 2 * pad
        if lines[-1] and x + step > total:
            lines.append([])
            x = pad
        lines[-1].append((name, colour, x))
        x += step
    bottom = len(lines) * (size + pad) + pad if legend else 0
    canvas = Image.new("RGB", (total, below + bottom), "white")
    draw = ImageDraw.Draw(canvas)
    for i, tiles in enumerate(rows):
        for j, tile in enumerate(tiles):
            canvas.paste(Image.fromarray(tile), (xs[j], ys[i]))
    for text, x, w in zip(column_labels, xs, widths, strict=True):
        draw.text((x + w // 2, top // 2), text, fill="black", font=font, anchor="mm")
    for text, y, h in zip(row_labels, ys, heights, strict=True):
        draw.text((left - pad, y + h // 2), text, fill="black", font=font, anchor="rm")
    for k, line in enumerate(lines):
        y = below + pad + k * (size + pad)
        for name, colour, x in line:
            draw.rectangle((x, y, x + size, y + size), fill=tuple(int(c) for c in colour), outline="black")
            draw.text((x + size + pad // 2, y + size // 2), name, fill="black", font=font, anchor="lm")
    return np.asarray(canvas)
