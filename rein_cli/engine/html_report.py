"""The shift report, report.html: one self-contained page (inline CSS, no script, nothing from the network) with the
summary, and per target the classes that lost IoU against the source, the confusions that grew, the charts and the
worst images, all pictures files beside it."""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from urllib.parse import quote

from rein_cli.engine.report import corruption_rows, fmt, safe_name
from rein_cli.engine.results import DatasetResult, Evaluation, ImageCase, Interval
from rein_cli.engine.shift import Shift, shift, source_for
from rein_cli.errors import ReinError
from rein_cli.io import atomic_path

HTML_FILE = "report.html"
PICTURES = (("image", "image"), ("label", "ground truth"), ("prediction", "prediction"), ("errors", "errors"))

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; background: #fff;
       margin: 0 auto; padding: 1rem 1.5rem 3rem; max-width: 1200px; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; padding-bottom: .2rem; border-bottom: 2px solid #4c72b0; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
section { margin-bottom: 1.5rem; }
.setting { color: #444; margin: .2rem 0 1rem; padding-left: 1.2rem; }
.note { background: #f4f6fa; border-left: 4px solid #4c72b0; padding: .5rem .8rem; margin: .8rem 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-size: .92rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: left; vertical-align: top; }
th { background: #f0f0f3; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.bad { color: #b22222; }
tr.mean td { font-weight: 600; border-top: 2px solid #999; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1rem; align-items: start; }
.charts img { width: 100%; height: auto; border: 1px solid #ddd; }
.case { border: 1px solid #ddd; border-radius: 6px; padding: .6rem; margin: .8rem 0; }
.case p { margin: 0 0 .5rem; }
.pictures { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: .6rem; }
figure { margin: 0; }
figure img { width: 100%; height: auto; image-rendering: pixelated; background: #eee; border: 1px solid #ccc; }
figcaption { font-size: .85rem; color: #555; text-align: center; }
.absent { display: flex; align-items: center; justify-content: center; min-height: 6rem; background: #f4f4f4;
          color: #888; border: 1px dashed #bbb; }
code { font-size: .9em; }
"""


def write_html(results: Evaluation, out: Path, reference: Evaluation | None = None) -> Path:
    """``out/report.html``, written atomically: the shift report of ``results`` (the charts and the worst images'
    pictures are files under ``out``); ``reference``: an evaluation whose training dataset is the source when
    ``results`` has none of its own."""
    out = Path(out)
    path = out / HTML_FILE
    text = format_html(results, out, reference)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def format_html(results: Evaluation, out: Path, reference: Evaluation | None = None) -> str:
    """report.html's text; ``out``: the folder it is written to (a chart is shown only if its file is there)."""
    found = source_for(results, reference)
    source_name, source = found if found is not None else (None, None)
    external = source is not None and results.datasets.get(source_name) is not source
    clean = {n: e for n, e in results.datasets.items() if e.corruption is None}
    ids = section_ids(list(clean))
    body = [
        "<h1>Shift report</h1>",
        _setting(results),
        _source_note(source_name, source, external),
        "<h2>Summary</h2>",
        _summary(results, clean, ids, source_name, source, external),
    ]
    if results.corruption:
        body.append(_corruptions(results, out))
    # the targets first, the source (when evaluated here) last
    for name, entry in sorted(clean.items(), key=lambda item: item[1] is source):
        body.append(_section(name, entry, ids[name], out, source_name, source))
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Shift report: {escape(', '.join(results.datasets) or 'no dataset')}</title>\n"
        f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )


def section_ids(names: list[str]) -> dict[str, str]:
    """Each dataset's section id (``d-`` and its file-safe name), unique."""
    ids: dict[str, str] = {}
    for name in names:
        base = candidate = f"d-{safe_name(name)}"
        k = 2
        while candidate in ids.values():
            candidate, k = f"{base}-{k}", k + 1
        ids[name] = candidate
    return ids


def _setting(results: Evaluation) -> str:
    parameters = results.trainable_parameters
    model = f"{results.method or '?'} on {results.backbone or '?'}"
    if parameters is not None:
        model += f", {parameters:,} trainable parameters"
    provenance = results.model.provenance if results.model is not None else {}
    where = provenance.get("checkpoint") or provenance.get("adapter") or provenance.get("hub_repo")
    if where:
        model += f" ({where})"
    items = [
        f"model: {model}",
        f"trained on: {', '.join(results.trained_on) or 'unknown'}",
        results.setting(),
    ]
    return '<ul class="setting">' + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"


def _source_note(name: str | None, source: DatasetResult | None, external: bool) -> str:
    if source is None:
        return (
            '<p class="note">No source was evaluated: no dataset of this evaluation is a training dataset of the '
            "model, and no reference evaluation was given, so the targets are not compared with the training domain. "
            "Each target shows its own per-class IoU and its worst images. To see what the shift costs, evaluate the "
            "training dataset too (add it to <code>--target</code>), or pass <code>--reference results.json</code> "
            "of an evaluation on it.</p>"
        )
    where = "from the reference evaluation (<code>--reference</code>)" if external else "evaluated here"
    what = "the model's training domain" if source.trained_on else "the reference evaluation's first dataset"
    return (
        f'<p class="note">Source: <strong>{escape(name)}</strong>, {what}, {where}; mIoU '
        f"{fmt(source.mIoU)}. Each target below is compared with it: which classes lost IoU, and which confusions "
        "grew.</p>"
    )


def _interval(interval: Interval | None) -> str:
    if interval is None:
        return '<td class="n">-</td>'
    title = f"95% bootstrap interval, {interval.resamples} resamples of the images, seed {interval.seed}"
    return f'<td class="n" title="{escape(title)}">{fmt(interval.low)} to {fmt(interval.high)}</td>'


def _role(name: str, entry: DatasetResult, results: Evaluation, source_name: str | None) -> str:
    if not entry.labeled:
        return "no labels"
    role = "source" if name == source_name else "target"
    if entry.trained_on:
        role += ", trained on"
    return role + (", in the DG mean" if name in results.mean_of else "")


def _summary(
    results: Evaluation,
    clean: dict[str, DatasetResult],
    ids: dict[str, str],
    source_name: str | None,
    source: DatasetResult | None,
    external: bool,
) -> str:
    head = ["dataset", "role", "images", "mIoU", "95% interval", "mAcc", "aAcc"]
    rows = []
    if external:
        rows.append([f"{escape(source_name)} (reference)", "source", _n(source.images), *_figures(source)])
    own = None if external else source_name
    for name, e in clean.items():
        link = f'<a href="#{ids[name]}">{escape(name)}</a>'
        rows.append([link, escape(_role(name, e, results, own)), _n(e.images), *_figures(e)])
    mean = None
    if not math.isnan(results.mean_mIoU) and results.mean_of:
        mean = [
            "DG mean",
            escape(f"over {', '.join(results.mean_of)}"),
            _n(""),
            _n(fmt(results.mean_mIoU)),
            _interval(results.mean_interval),
            _n(fmt(results.mean_mAcc)),
            _n(fmt(results.mean_aAcc)),
        ]
    lines = [_table(head, rows, mean)]
    if results.mean_note:
        lines.append(f"<p>{escape(results.mean_note)}.</p>")
    corrupted = len(results.datasets) - len(clean)
    if corrupted:
        lines.append(f'<p>{corrupted} corrupted copies: see <a href="#corruptions">Corruptions</a>.</p>')
    return "\n".join(lines)


def _figures(entry: DatasetResult) -> list[str]:
    """The mIoU, its interval, mAcc and aAcc cells of a dataset."""
    return [_n(fmt(entry.mIoU)), _interval(entry.interval), _n(fmt(entry.mAcc)), _n(fmt(entry.aAcc))]


def _corruptions(results: Evaluation, out: Path) -> str:
    corruption = results.corruption
    parts = [
        '<section id="corruptions">',
        f"<h2>Corruptions (<code>--corruption {escape(corruption.spec)}</code>)</h2>",
    ]
    for dataset, summary in corruption.datasets.items():
        header, rows = corruption_rows(summary)
        cells = [[escape(r[0]), *(_n(v) for v in r[1:])] for r in rows[:-1]]
        mean = [escape(rows[-1][0]), *(_n(v) for v in rows[-1][1:])]
        parts += [
            f"<h3>{escape(dataset)}: mIoU per corruption and severity</h3>",
            _table(header, cells, mean),
            f"<p>Mean mIoU over {summary.pairs} corruption-severity pairs: <strong>{fmt(summary.mIoU)}</strong>.</p>",
            _charts(out, [(f"{safe_name(dataset)}-corruptions.png", f"{dataset}: mIoU per corruption and severity")]),
        ]
    parts.append("</section>")
    return "\n".join(parts)


def _section(
    name: str,
    entry: DatasetResult,
    section_id: str,
    out: Path,
    source_name: str | None,
    source: DatasetResult | None,
) -> str:
    interval = entry.interval
    span = f" (95% interval {fmt(interval.low)} to {fmt(interval.high)})" if interval is not None else ""
    parts = [f'<section id="{section_id}">', f"<h2>{escape(name)}</h2>"]
    if not entry.labeled:
        parts.append(f"<p>{entry.images} images without labels in this split: no metrics.</p>")
        if entry.predictions is not None:
            parts.append(
                f"<p>Predictions: <code>{escape(entry.predictions)}</code> ({escape(entry.prediction_ids)}).</p>"
            )
        return "\n".join([*parts, "</section>"])
    parts.append(
        f"<p>{entry.images} images; mIoU {fmt(entry.mIoU)}{span}, mAcc {fmt(entry.mAcc)}, aAcc {fmt(entry.aAcc)}.</p>"
    )
    if source is None or (entry is source):
        if entry is source:
            parts.append("<p>The source: the other datasets are compared with this one.</p>")
        parts.append(_per_class(entry))
    else:
        try:
            parts.append(_shift(shift(source, entry, (source_name, name))))
        except ReinError as err:
            parts += [f'<p class="note">Not compared with the source: {escape(str(err))}.</p>', _per_class(entry)]
    safe = safe_name(name)
    parts.append(
        _charts(out, [(f"{safe}-iou.png", f"{name}: IoU per class"), (f"{safe}-confusion.png", f"{name}: confusion")])
    )
    parts += [_gallery(name, entry.worst), "</section>"]
    return "\n".join(parts)


def _per_class(entry: DatasetResult) -> str:
    rows = [[escape(c), _n(fmt(s.IoU)), _n(fmt(s.Acc))] for c, s in entry.per_class.items()]
    return "<h3>IoU per class</h3>\n" + _table(["class", "IoU", "Acc"], rows)


def _shift(result: Shift) -> str:
    source, target = escape(result.source), escape(result.target)
    rows = [
        [escape(d.name), _n(fmt(d.source)), _n(fmt(d.target)), _n(fmt(d.drop), "bad" if d.drop > 0 else "")]
        for d in result.drops
    ]
    parts = [
        f"<h3>IoU drop per class ({source} to {target})</h3>",
        "<p>IoU on the source minus IoU here, largest drop first (a negative drop: better here).</p>",
        _table(["class", f"IoU {result.source}", f"IoU {result.target}", "drop"], rows),  # escaped there
    ]
    if result.undefined:
        missing = ", ".join(
            f"{escape(d.name)} (source {fmt(d.source)}, here {fmt(d.target)})" for d in result.undefined
        )
        parts.append(f"<p>No IoU on one side (absent from its labels and predictions): {missing}.</p>")
    parts.append(f"<h3>Confusions that grew most ({source} to {target})</h3>")
    if result.confusions:
        rows = [
            [escape(g.true), escape(g.predicted), _n(fmt(g.source)), _n(fmt(g.target)), _n(f"+{fmt(g.growth)}", "bad")]
            for g in result.confusions
        ]
        parts += [
            "<p>The share of a true class's pixels predicted as another class, on the source and here (percent), and "
            "its growth in percentage points.</p>",
            _table(["true class", "predicted as", "share on source", "share here", "growth (pp)"], rows),
        ]
    else:
        parts.append("<p>No confusion grew (or a confusion matrix is missing).</p>")
    return "\n".join(parts)


def _charts(out: Path, charts: list[tuple[str, str]]) -> str:
    shown = [
        f'<img src="plots/{quote(file)}" alt="{escape(alt)}">'
        for file, alt in charts
        if (out / "plots" / file).is_file()
    ]
    return f'<div class="charts">{"".join(shown)}</div>' if shown else ""


def _gallery(name: str, worst: tuple[ImageCase, ...]) -> str:
    parts = ["<h3>Worst images</h3>"]
    if not worst:
        return parts[0] + "\n<p>No worst images recorded.</p>"
    parts.append(
        "<p>The images with the lowest mIoU of their own, worst first. In the error map a wrongly predicted pixel is "
        "red, a right one the image in dim grey, an unlabeled one black.</p>"
    )
    for rank, case in enumerate(worst, 1):
        figures = []
        for key, caption in PICTURES:
            file = case.files.get(key)
            if file:
                alt = f"{name}: {case.image}, {caption}"
                picture = f'<img src="{escape(quote(Path(file).as_posix()))}" alt="{escape(alt)}">'
            else:
                picture = '<div class="absent">not recorded</div>'
            figures.append(f"<figure>{picture}<figcaption>{caption}</figcaption></figure>")
        parts += [
            '<div class="case">',
            f"<p>{rank}. <code>{escape(case.image)}</code>: mIoU {fmt(case.mIoU)}, aAcc {fmt(case.aAcc)}</p>",
            f'<div class="pictures">{"".join(figures)}</div>',
            "</div>",
        ]
    return "\n".join(parts)


def _n(value: object, extra: str = "") -> str:
    """A number's cell, right-aligned."""
    return f'<td class="n{" " + extra if extra else ""}">{escape(str(value))}</td>'


def _table(head: list[str], rows: list[list[str]], mean: list[str] | None = None) -> str:
    """A table of cells: a cell that is not already one (``<td``) is put into one."""

    def cells(row: list[str]) -> str:
        return "".join(c if c.startswith("<td") else f"<td>{c}</td>" for c in row)

    first = rows[0] if rows else []
    numeric = [i < len(first) and first[i].startswith('<td class="n') for i in range(len(head))]
    right = ' class="n"'
    header = "".join(f"<th{right if n else ''}>{escape(h)}</th>" for h, n in zip(head, numeric, strict=True))
    body = "".join(f"<tr>{cells(r)}</tr>" for r in rows)
    if mean is not None:
        body += f'<tr class="mean">{cells(mean)}</tr>'
    return f'<div class="scroll"><table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table></div>'
