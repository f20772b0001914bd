"""A comparison for people and files: the terminal table, compare.md, compare.csv and the grouped-bar chart.

One layout everywhere: a row per method, its cells ``mean ± std`` over seeds (the value alone for one seed, ``-``
when missing); under a row with published figures a ``paper`` line. The CSV gives each column as three:
``<target>``, ``<target>_std`` and ``<target>_paper``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from rein_cli.engine.charts import SOURCE_HATCH, headroom, save_figure, shorten
from rein_cli.engine.compare import Cell, Comparison, Difference
from rein_cli.engine.report import fmt
from rein_cli.engine.results import Published
from rein_cli.io import check_writable, write_text

PAPER = "paper"
LEGEND = (
    "cells: mIoU (%); a row with several seeds shows their mean ± the sample standard deviation (n - 1); the "
    f'"{PAPER}" line under a row gives the published figures (those for the split compared, where the paper has '
    "them)"
)


def cell_text(cell: Cell) -> str:
    """``66.40 ± 0.50`` over seeds, ``66.40`` for one value, ``-`` for none."""
    if cell.std is not None:
        return f"{cell.mean:.2f} ± {cell.std:.2f}"
    return fmt(cell.mean)


def _lines(table: Comparison) -> list[tuple[str, list[str]]]:
    """(label, cells) per line of the table: each row, then its paper line when it has published figures."""
    lines = []
    for row in table.rows:
        cells = [cell_text(row.cells[c]) for c in table.columns]
        lines.append((row.label, [*cells, fmt(row.parameters), str(row.seeds)]))
        if any(row.cells[c].paper is not None for c in table.columns):
            lines.append((PAPER, [_paper(row.cells[c].paper) for c in table.columns] + ["", ""]))
    return lines


def _paper(value: float | None) -> str:
    """A published figure as published (``*``: measured on another checkpoint, said in a note); else ``fmt``."""
    return value.shown if isinstance(value, Published) else fmt(value)


def header(table: Comparison) -> list[str]:
    return ["method", *table.columns, "params (M)", "seeds"]


def format_text(table: Comparison) -> str:
    """The table for the terminal, with the split, the legend and the notes."""
    head = header(table)
    lines = [(f"  {label}" if label == PAPER else label, cells) for label, cells in _lines(table)]
    widths = [max(len(head[0]), *(len(label) for label, _ in lines))]
    widths += [max(len(h), *(len(cells[k]) for _, cells in lines)) for k, h in enumerate(head[1:])]

    def line(first: str, rest: list[str]) -> str:
        parts = [first.ljust(widths[0])] + [v.rjust(w) for v, w in zip(rest, widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    text = [f"split {table.split}; {LEGEND}", line(head[0], head[1:])]
    text += [line(label, cells) for label, cells in lines]
    text += [f"note: {note}" for note in table.notes]
    if table.differences:
        text += ["", DIFFERENCES, *(difference_text(d) for d in table.differences)]
    return "\n".join(text)


DIFFERENCES = "paired differences on the same images (95% bootstrap interval over images; * the interval excludes 0):"


def difference_text(d: Difference) -> str:
    """``A - B  cityscapes  +1.23 [0.40, 2.10] *``."""
    mark = " *" if d.clear else ""
    return f"{d.a} - {d.b}  {d.column}  {d.value:+.2f} [{d.interval.low:.2f}, {d.interval.high:.2f}]{mark}"


def format_markdown(table: Comparison) -> str:
    """compare.md: the legend, the table, the notes, and each row's inputs (with the seed of a training run)."""
    head = header(table)
    lines = [
        "# Comparison",
        "",
        f"Split: {table.split}; {LEGEND}.",
        "",
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * (len(head) - 1),
    ]
    for label, cells in _lines(table):
        lines.append(f"| {'*' + PAPER + '*' if label == PAPER else _cell(label)} | " + " | ".join(cells) + " |")
    if table.notes:
        lines += ["", *(f"- {note}" for note in table.notes)]
    if table.differences:
        lines += ["", "## Paired differences", "", f"{DIFFERENCES[0].upper()}{DIFFERENCES[1:-1]}.", ""]
        lines += ["| rows | column | difference | 95% interval | excludes 0 |", "|---|---|---:|---:|---|"]
        for d in table.differences:
            cells = [f"{_cell(d.a)} - {_cell(d.b)}", d.column, f"{d.value:+.2f}"]
            cells += [f"[{d.interval.low:.2f}, {d.interval.high:.2f}]", "yes" if d.clear else "no"]
            lines.append(f"| {' | '.join(cells)} |")
    lines += ["", "## Inputs", "", "| method | seed | results |", "|---|---:|---|"]
    for row in table.rows:
        for e in row.evaluations:
            lines.append(f"| {_cell(row.label)} | {'-' if e.seed is None else e.seed} | `{e.file}` |")
    lines += ["", f"![{' vs '.join(r.label for r in table.rows)}](compare.png)"]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")  # a label's bar would end its Markdown cell


def format_csv(table: Comparison) -> str:
    """compare.csv: ``method``, then ``<column>``, ``<column>_std``, ``<column>_paper`` per target and for the DG
    mean (``mean_mIoU``), then ``trainable_parameters_M`` and ``seeds``; missing values are empty."""
    names = [*table.targets, "mean_mIoU"]
    fields = ["method", *(f"{n}{suffix}" for n in names for suffix in ("", "_std", "_paper"))]
    fields += ["trainable_parameters_M", "seeds"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(fields)
    for row in table.rows:
        values: list[Any] = [row.label]
        for column in table.columns:
            cell = row.cells[column]
            values += [_csv(cell.mean), _csv(cell.std), _csv(cell.paper)]
        writer.writerow([*values, _csv(row.parameters), row.seeds])
    return buffer.getvalue()


def _csv(value: float | None) -> str:
    return "" if value is None else value.text if isinstance(value, Published) else f"{value:.2f}"


def chart(table: Comparison) -> Any:
    """Grouped bars: a group per target (and the DG mean), a bar per row with its mIoU written above, the axis
    scaled to the figures. A row of several seeds has error bars of ± the sample standard deviation; a target the
    row's model was trained on (its source domain) is hatched and marked ``source``; the paper's figure is a black
    diamond; a missing figure is ``n/a``. Long row labels are shortened in the legend (compare.md has them whole)."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state
    from matplotlib.patches import Patch

    columns, rows = list(table.columns), list(table.rows)
    width = 0.8 / max(1, len(rows))
    figure = Figure(
        figsize=(max(7.0, 1.1 * len(columns) * max(1, len(rows)) ** 0.5 + 4.0), 4.5), dpi=110, layout="constrained"
    )
    ax = figure.add_subplot()
    shown = [row.cells[c] for row in rows for c in columns]
    top = headroom([(c.mean or 0.0) + (c.std or 0.0) for c in shown] + [c.paper for c in shown if c.paper is not None])
    ax.set_ylim(0, top * 1.08)  # the source note above the value label
    lift = 0.01 * top
    handles: list[Any] = []  # the legend: a patch per row, then what the marks mean
    labels: list[str] = []
    errors = papers = None  # one of each for the legend
    for k, row in enumerate(rows):
        xs = [j - 0.4 + width * (k + 0.5) for j in range(len(columns))]
        cells = [row.cells[c] for c in columns]
        label = shorten(row.label) + (f" ({row.seeds} seeds)" if row.seeds > 1 else "")
        present = [(x, c) for x, c in zip(xs, cells, strict=True) if c.mean is not None]
        bars = ax.bar([x for x, _ in present], [c.mean for _, c in present], width, color=f"C{k % 10}")
        handles.append(Patch(facecolor=f"C{k % 10}"))
        labels.append(label)
        for bar, (x, c) in zip(bars, present, strict=True):
            if c.trained_on:
                bar.set_hatch(SOURCE_HATCH)
                bar.set_edgecolor("white")
            above = c.mean + (c.std or 0.0) + lift
            text = f"{c.mean:.1f}\nsource" if c.trained_on else f"{c.mean:.1f}"
            ax.text(x, above, text, ha="center", va="bottom", fontsize=7, linespacing=1.1)
        for x, c in zip(xs, cells, strict=True):
            if c.mean is None:
                ax.text(x, lift, "n/a", ha="center", va="bottom", rotation=90, fontsize=7, color="#777777")
        spread = [(x, c) for x, c in present if c.std is not None]
        if spread:
            errors = ax.errorbar(
                [x for x, _ in spread],
                [c.mean for _, c in spread],
                yerr=[c.std for _, c in spread],
                fmt="none",
                ecolor="black",
                elinewidth=1,
                capsize=3,
            )
        marked = [(x, c.paper) for x, c in zip(xs, cells, strict=True) if c.paper is not None]
        if marked:
            papers = ax.scatter(*zip(*marked, strict=True), marker="D", s=22, color="black", zorder=3)
    if errors is not None:
        handles.append(errors)
        labels.append("± sample std (n - 1) over a row's n seeds")
    if papers is not None:
        handles.append(papers)
        labels.append(PAPER)
    if any(c.trained_on for c in shown):
        handles.append(Patch(facecolor="#999999", edgecolor="white", hatch=SOURCE_HATCH))
        labels.append("source: trained on it (not in the DG mean)")
    if len(columns) > 1:
        ax.axvline(len(columns) - 1.5, color="#999999", linestyle=":", linewidth=1)  # the DG mean apart
    ax.set_xticks(range(len(columns)), columns, rotation=20, ha="right", fontsize=8)
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylabel("mIoU (%)")
    ax.set_title(f"mIoU per target ({table.split})", fontsize=10)
    figure.legend(handles, labels, fontsize=8, loc="outside right upper")
    return figure


def write_comparison(table: Comparison, out: Path) -> list[Path]:
    """``out/compare.md``, ``out/compare.csv`` and ``out/compare.png``, each written atomically."""
    out = Path(out)
    check_writable(out)
    write_text(out / "compare.md", format_markdown(table))
    write_text(out / "compare.csv", format_csv(table))
    save_figure(chart(table), out / "compare.png")
    return [out / "compare.md", out / "compare.csv", out / "compare.png"]
