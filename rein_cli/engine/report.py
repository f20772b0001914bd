"""Evaluation results for people: the per-class table, ours beside the published figures, report.md and the
charts."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from rein_cli.engine.charts import confusion_chart, corruption_chart, iou_chart, save_figure
from rein_cli.engine.estimate import CITED, RECOMMENDED
from rein_cli.engine.results import CorruptionSummary, Evaluation, Interval, Published
from rein_cli.io import write_text

REPORT_FILE = "report.md"


def fmt(v: float | None) -> str:
    """A figure with two decimals, a published one as published (``60.0``); ``-`` for none (or NaN)."""
    if isinstance(v, Published):
        return v.text
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def fmt_interval(interval: Interval | None) -> str:
    """``[40.12, 43.80]``; ``-`` for none."""
    if interval is None or math.isnan(interval.low):
        return "-"
    return f"[{interval.low:.2f}, {interval.high:.2f}]"


def _classes(results: Evaluation) -> list[str]:
    return next((list(e.per_class) for e in results.datasets.values() if e.labeled), [])


def mean_line(results: Evaluation) -> str:
    """``DG mean mIoU 41.20 over fog, night, rain, snow (left out: synthetic, a training dataset)``; empty when
    there is nothing to average."""
    names = results.mean_of
    scored = list(results.scored())
    if len(scored) < 2 and not (results.mean_note and scored):
        return ""
    line = f"DG mean mIoU {fmt(results.mean_mIoU)}"
    if results.mean_interval is not None:
        line += f" (95% interval {fmt_interval(results.mean_interval)})"
    line += f" over {', '.join(names)}"
    left = [n for n in scored if n not in names]
    if left:
        line += f" (left out, trained on: {', '.join(left)})"
    elif any(e.trained_on for e in results.datasets.values()):
        line += " (every dataset is a training dataset: all entered)"
    return line


def corruption_rows(summary: CorruptionSummary) -> tuple[list[str], list[list[str]]]:
    """The header and rows of one dataset's corruption x severity table (mIoU; a mean column, a mean row)."""
    levels = summary.levels
    header = ["corruption", *(str(k) for k in levels), "mean"]
    rows = [
        [name, *(fmt(row.get(str(k))) for k in levels), fmt(row["mean"])]
        for name, row in summary.per_corruption.items()
    ]
    rows.append(["mean", *([""] * len(levels)), fmt(summary.mIoU)])
    return header, rows


def format_corruptions(results: Evaluation) -> str:
    """Per dataset, the mIoU per corruption (rows) and severity (columns) and the mean over every pair."""
    blocks = []
    for dataset, summary in results.corruption.datasets.items():
        header, rows = corruption_rows(summary)
        width = max(len(r[0]) for r in [header, *rows]) + 2

        def line(r: list[str], width: int = width) -> str:
            return r[0].ljust(width) + "".join(v.rjust(8) for v in r[1:])

        rule = "-" * len(line(header))
        lines = [f"{dataset}: mIoU per corruption and severity (--corruption {results.corruption.spec})"]
        lines += [line(header), rule, *(line(r) for r in rows[:-1]), rule]
        lines.append(f"mean mIoU over {summary.pairs} corruption-severity pairs: {fmt(summary.mIoU)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def format_table(results: Evaluation, *, per_class: bool = True) -> str:
    """Per-class IoU (without ``per_class``: the compact table, none), one column per dataset, then mIoU / mAcc /
    aAcc rows, the reported figures, and the DG mean with the datasets it is over; for a corruption run, the
    corruption x severity tables instead."""
    if results.corruption:
        return format_corruptions(results)
    names = list(results.datasets)
    if not names:
        return ""
    classes = _classes(results) if per_class else []
    width = max(14, *(len(c) + 2 for c in classes)) if classes else 14
    entries = [results.datasets[n] for n in names]
    intervals = [fmt_interval(e.interval).replace(", ", "-") for e in entries]
    cols = [max(8, len(n) + 2, len(i) + 2) for n, i in zip(names, intervals, strict=True)]

    def row(label: str, values: list[str]) -> str:
        return label.ljust(width) + "".join(v.rjust(w) for v, w in zip(values, cols, strict=True))

    lines = [row("class" if per_class else "", names)]
    for c in classes:
        lines.append(row(c, [fmt(_iou(e, c)) for e in entries]))
    lines.append("-" * len(lines[0]))
    lines.append(row("mIoU", [fmt(e.mIoU) for e in entries]))
    if any(e.interval is not None for e in entries):
        lines.append(row("95% interval", intervals))
    for key in ("mAcc", "aAcc"):
        lines.append(row(key, [fmt(getattr(e, key)) for e in entries]))
    if any(e.reported for e in entries):
        lines.append(row("reported mIoU", [e.reported[0].mIoU.shown if e.reported else "-" for e in entries]))
        lines += [
            f"  * {n}: {e.reported[0].label}"
            for n, e in zip(names, entries, strict=True)
            if e.reported and e.reported[0].checkpoint
        ]
    if any(e.predictions is not None for e in entries):
        lines += [
            f"predictions of {n}: {e.predictions} ({e.prediction_ids})"
            for n, e in zip(names, entries, strict=True)
            if e.predictions is not None
        ]
    mean = mean_line(results)
    if mean:
        lines.append(mean)
    lines += assumed_lines(results)
    return "\n".join(lines)


def assumed_lines(results: Evaluation) -> list[str]:
    """The settings of a released model that its published files do not give and rein assumed, one line each."""
    if not results.assumed:
        return []
    return ["assumed (the release does not publish these; the result depends on them):"] + [
        f"  {line}" for line in results.assumed
    ]


def _iou(entry: Any, name: str) -> float | None:
    score = entry.per_class.get(name)
    return score.IoU if score is not None else None


def format_estimates(results: Evaluation) -> str:
    """The label-free estimates (rein eval --estimate): per metric one row per target, one column per estimator,
    the measured figure last where the target has labels; empty without estimates."""
    rows = {name: e for name, e in results.datasets.items() if e.estimates}
    if not rows:
        return ""
    width = max(16, *(len(n) + 2 for n in rows))
    blocks = [f"Estimated without labels, calibrated on {results.calibrated_on} ({results.split}); docs/analysis.md"]
    for metric, title in (("aAcc", "pixel accuracy"), ("mIoU", "mIoU")):
        methods = list(
            dict.fromkeys(e.method for entry in rows.values() for e in entry.estimates if e.metric == metric)
        )
        methods.sort(key=lambda m: m != RECOMMENDED[metric])  # the recommended one first
        heads = [f"{m}*" if m == RECOMMENDED[metric] else m for m in methods] + ["measured"]
        cols = [max(8, len(h) + 2) for h in heads]
        lines = [title.ljust(width) + "".join(h.rjust(w) for h, w in zip(heads, cols, strict=True))]
        for name, entry in rows.items():
            found = {e.method: e.value for e in entry.estimates if e.metric == metric}
            values = [fmt(found.get(m)) for m in methods] + [fmt(getattr(entry, metric))]
            lines.append(name.ljust(width) + "".join(v.rjust(w) for v, w in zip(values, cols, strict=True)))
        blocks.append("\n".join(lines))
    found = {e.method: e for e in next(iter(rows.values())).estimates}  # the calibration is the source's, one for all
    notes = [f"calibration on {results.calibrated_on}: aAcc {fmt(found['DoC'].calibration['source_accuracy'])}"]
    if "DoC mIoU" in found:
        notes[0] += f", mIoU {fmt(found['DoC mIoU'].calibration['source_miou'])}"
    notes[0] += f", mean confidence {fmt(found['DoC'].calibration['source_confidence'])}"
    thresholds = [f"{m} {found[m].calibration['threshold']:.3f}" for m in ("ATC-MC", "ATC-NE") if m in found]
    if thresholds:
        notes[0] += f"; ATC thresholds {', '.join(thresholds)} (per class: results.json)"
    cited = dict.fromkeys(e.citation for e in found.values())
    notes.append("sources: " + "; ".join(CITED.get(c, c) for c in cited))
    notes.append("* the estimator with the smallest largest error on the embedded benchmark (docs/analysis.md)")
    blocks.append("\n".join(notes))
    return "\n\n".join(blocks)


def format_comparison(results: Evaluation) -> str:
    """Our mIoU beside the published figures, one line per target (empty when nothing was published)."""
    lines = []
    for name, entry in results.datasets.items():
        for r in entry.reported:
            lines.append(f"  {name:<18} ours {entry.mIoU:6.2f}   published {r.mIoU.text:>6} ({r.split}, {r.label})")
    return "\n".join(["ours vs published (mIoU):", *lines]) if lines else ""


def safe_name(name: str) -> str:
    """A dataset name as a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "dataset"


def format_markdown(results: Evaluation) -> str:
    """report.md: the setting, per dataset mIoU / mAcc / aAcc beside the reported figures, the DG mean and the
    datasets in it, the per-class IoU table, the charts."""
    names = list(results.datasets)
    model = results.model.provenance if results.model is not None else {}
    where = model.get("checkpoint") or model.get("adapter") or model.get("hub_repo") or ""
    parameters = results.trainable_parameters
    lines = [
        "# Evaluation report",
        "",
        f"- model: {results.method or '?'} on {results.backbone or '?'}"
        + (f", {parameters:,} trainable parameters" if parameters is not None else "")
        + (f" ({where})" if where else ""),
        f"- trained on: {', '.join(results.trained_on) or 'unknown'}",
        f"- {results.setting()}",
        *(f"- assumed, not published with the release: {line}" for line in results.assumed),
        "",
        "## Results",
        "",
        "| dataset | images | mIoU | 95% interval | mAcc | aAcc | reported mIoU | in the mean |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    mean_of = set(results.mean_of)
    for name in names:
        e = results.datasets[name]
        reported = "; ".join(f"{r.mIoU.text} ({r.split}, {r.label})" for r in e.reported) or "-"
        if not e.labeled:
            inside = "no (no labels)"
        elif name in mean_of:
            inside = "yes"
        else:
            inside = "no (trained on it)"
        cells = [name, str(e.images), fmt(e.mIoU), fmt_interval(e.interval), fmt(e.mAcc), fmt(e.aAcc), reported, inside]
        lines.append(f"| {' | '.join(cells)} |")
    corruption = results.corruption
    if corruption:
        lines += ["", f"## Corruptions (`--corruption {corruption.spec}`)", ""]
        for dataset, summary in corruption.datasets.items():
            header, rows = corruption_rows(summary)
            lines += [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
            lines += ["| " + " | ".join([*r[:-1], f"**{r[-1]}**" if r[0] == "mean" else r[-1]]) + " |" for r in rows]
            lines += [
                "",
                f"Mean mIoU over {summary.pairs} corruption-severity pairs: **{fmt(summary.mIoU)}** (the "
                "mean of the per-pair mIoUs rounded to two decimals).",
                "",
                f"![{dataset}: mIoU per corruption and severity](plots/{safe_name(dataset)}-corruptions.png)",
                "",
            ]
        return "\n".join(lines).rstrip() + "\n"
    mean = mean_line(results)
    if mean:
        lines += [
            "",
            f"**{mean}.** The mean is the plain average of the per-dataset mIoUs rounded to two decimals, over the "
            "target datasets; the datasets the model was trained on never enter it (unless every dataset evaluated "
            "is one).",
        ]
    if results.mean_interval is not None or any(e.interval is not None for e in results.datasets.values()):
        lines += [
            "",
            "The 95% intervals are percentile bootstrap intervals over images (1000 resamples of each dataset's "
            "images, seeded): how much a figure would move with another sample of images like these "
            "(docs/analysis.md).",
        ]
    classes = _classes(results)
    scored = list(results.scored())
    if classes:
        lines += ["", "## Per-class IoU", "", "| class | " + " | ".join(scored) + " |", "|---|" + "---:|" * len(scored)]
        for c in classes:
            values = [fmt(_iou(results.datasets[n], c)) for n in scored]
            lines.append(f"| {c} | " + " | ".join(values) + " |")
        lines += [
            "",
            "A class absent from both the labels and the predictions of a dataset has no IoU (-) and is left "
            "out of its mIoU.",
            "",
            "## Charts",
            "",
        ]
        for n in scored:
            lines += [
                f"![{n}: IoU per class](plots/{safe_name(n)}-iou.png)",
                f"![{n}: confusion matrix](plots/{safe_name(n)}-confusion.png)",
                "",
            ]
    predictions = [(n, e) for n, e in results.datasets.items() if e.predictions is not None]
    if predictions:
        lines += ["## Predictions", ""]
        lines += [f"- {n}: `{e.predictions}` ({e.prediction_ids})" for n, e in predictions]
    if results.calibrated_on is not None:
        lines += ["", "## Estimated without labels", "", "```text", format_estimates(results), "```"]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: Evaluation, out: Path) -> list[Path]:
    """``out/report.md`` and, per dataset with metrics, ``out/plots/<dataset>-iou.png`` (IoU per class) and
    ``out/plots/<dataset>-confusion.png`` (the confusion matrix, rows normalised by the ground truth); for a
    corruption evaluation instead one ``out/plots/<dataset>-corruptions.png`` per dataset. Every file is written
    atomically; the charts are drawn once, after the evaluation."""
    out = Path(out)
    written = []
    for dataset, summary in (results.corruption.datasets if results.corruption else {}).items():
        written.append(
            save_figure(corruption_chart(dataset, summary), out / "plots" / f"{safe_name(dataset)}-corruptions.png")
        )
    # a corruption evaluation: the heat maps above instead of a pair of charts per corruption and severity
    entries = {} if results.corruption else results.datasets
    for name, entry in entries.items():
        if entry.labeled and entry.confusion is not None:
            classes = list(entry.per_class)
            ious = [entry.per_class[c].IoU for c in classes]
            written.append(
                save_figure(iou_chart(name, classes, ious, entry.mIoU), out / "plots" / f"{safe_name(name)}-iou.png")
            )
            written.append(
                save_figure(
                    confusion_chart(name, classes, entry.confusion),
                    out / "plots" / f"{safe_name(name)}-confusion.png",
                )
            )
    write_text(out / REPORT_FILE, format_markdown(results))
    return [out / REPORT_FILE, *written]
