"""`rein compare`: several evaluations side by side, one row per method (its seeds pooled), one column per target.

An input is a results.json, a folder holding one (``rein eval --out``), or a training run (its final evaluation,
``RUN/eval/results.json``); ``LABEL=PATH`` names the row. Inputs with the same label are seeds of one row when they
differ in the seed alone (`rein_cli.engine.pooling` states the rule; the others get rows of their own, named by
what tells them apart): each cell is the mean and the sample standard deviation (n - 1) over them. A corruption
evaluation's pairs (``<dataset>/<corruption>-<severity>``) are left out; its ``corruption`` block gives one
``<dataset>-C`` column.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rein_cli.config import ModelConfig, to_dict
from rein_cli.data.registry import canonical
from rein_cli.documents import Fields, load_yaml
from rein_cli.engine.bootstrap import paired_difference
from rein_cli.engine.imagestats import IMAGES_FILE, ImageStats, read_image_stats
from rein_cli.engine.pooling import (
    Input,
    checkpoint_settings,
    flatten,
    inference_note,
    label_note,
    numbered,
    pools,
    row_names,
    setting_text,
    split_note,
    training_settings,
    weights_of,
)
from rein_cli.engine.results import (
    RESULTS_FILE,
    CorruptionSummary,
    DatasetResult,
    Evaluation,
    Interval,
    read_results,
)
from rein_cli.engine.runs import RunDir
from rein_cli.errors import ReinError
from rein_cli.hub import parse_hf_uri

log = logging.getLogger(__name__)

MEAN = "DG mean"
# Model settings that say where weights came from or what the data made of them, not what was trained: never
# part of a row's label.
NOT_SETTINGS = ("backbone", "method", "weights", "backbone_revision", "num_classes")


@dataclass(frozen=True)
class Cell:
    """A row's values in one column (one per seed that has it), the paper's figure, and whether the column is a
    training dataset of the row's model (its source domain, not in the DG mean)."""

    values: tuple[float, ...] = ()
    paper: float | None = None
    trained_on: bool = False

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation (n - 1), from two values on."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None


@dataclass(frozen=True)
class Row:
    label: str
    evaluations: tuple[Input, ...]
    cells: Mapping[str, Cell]  # column -> cell, the DG mean (`MEAN`) included
    parameters: float | None  # trainable parameters, millions

    @property
    def seeds(self) -> int:
        return len(self.evaluations)


@dataclass(frozen=True)
class Difference:
    """Row ``a`` minus row ``b`` in one column, on the same images: the difference of their mIoU (each row's mean
    over its seeds) and its paired 95% bootstrap interval over the images."""

    a: str
    b: str
    column: str
    value: float
    interval: Interval

    @property
    def clear(self) -> bool:
        """Whether the interval excludes 0: a difference the images do not explain away."""
        return self.interval.low > 0 or self.interval.high < 0


@dataclass(frozen=True)
class Comparison:
    split: str
    targets: tuple[str, ...]  # the columns before the DG mean
    rows: tuple[Row, ...]
    notes: tuple[str, ...] = field(default=())
    differences: tuple[Difference, ...] = field(default=())

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.targets, MEAN)


# ---- reading the inputs -------------------------------------------------------------------------------------


def parse_input(text: str) -> tuple[str | None, Path]:
    """``LABEL=PATH`` -> (label, path); a path that exists (even one holding ``=``) -> (None, path). A label may
    hold ``=`` too (``rank=4=runs/a``): the split is at the first ``=`` after which an existing path follows."""
    text = str(text)
    if Path(text).exists() or "=" not in text:
        return None, Path(text)
    cuts = [k for k, char in enumerate(text) if char == "="]
    cut = next((k for k in cuts if Path(text[k + 1 :]).exists()), cuts[0])
    label, path = text[:cut].strip(), text[cut + 1 :]
    if not label:
        raise ReinError(f'"{text}": the label before "=" is empty; give LABEL=PATH or a path')
    return label, Path(path)


def find_results(path: Path) -> tuple[Path, RunDir | None]:
    """The results.json an input means, and the training run it belongs to (None for a plain evaluation)."""
    path = Path(path)
    if path.is_file():
        run = RunDir(path.parent.parent)
        is_run = path.name == RESULTS_FILE and path.parent.name == RunDir.EVAL and run.is_run()
        return path, run if is_run else None
    if not path.is_dir():
        raise ReinError(f"{path} does not exist; give a results.json, an evaluation folder or a training run")
    run = RunDir(path)
    if run.is_run():  # a training run: its final evaluation
        if not run.results.is_file():
            periodic = [p.parent.name for p in run.periodic_results()]
            extra = f" (only the periodic {', '.join(periodic)}: give one as PATH/eval/iter_N)" if periodic else ""
            raise ReinError(
                f"training run {path} has no final evaluation results ({run.results}){extra}; evaluate it with "
                f"`{_eval_command(run)}` or give a results.json"
            )
        return run.results, run
    if (path / RESULTS_FILE).is_file():
        return path / RESULTS_FILE, None
    raise ReinError(
        f"{path} holds neither {RESULTS_FILE} nor a training run ({RunDir.CONFIG}); give a results.json, the --out "
        "folder of `rein eval` or a `rein train` run directory"
    )


def _eval_command(run: RunDir) -> str:
    """The `rein eval` that writes a run's final evaluation where the run keeps it: its last checkpoint on the
    run's evaluation datasets (else its training data), from its data folder, in its mode."""
    import shlex

    try:
        settings = yaml.safe_load(run.config.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        settings = None
    settings = settings if isinstance(settings, dict) else {}
    data, evaluation = settings.get("data") or {}, settings.get("eval") or {}
    targets = [str(t) for t in (data.get("eval") or data.get("train") or [])] or ["NAME"]
    words = ["rein", "eval", str(run.checkpoint()), *(x for t in targets for x in ("--target", t))]
    words += ["--data-root", str(data["root"])] if data.get("root") else []
    words += ["--mode", str(evaluation["mode"])] if evaluation.get("mode") else []
    return shlex.join([*words, "--out", str(run.results.parent)])  # the run's own folder, not eval-NAME beside it


def _read_yaml(file: Path) -> dict[str, Any]:
    """A run's config.yaml, checked as far as the comparison reads it: each section a mapping, the recipe a name,
    the seed a whole number."""
    try:
        data = load_yaml(file.read_text(encoding="utf-8"), str(file))
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        raise ReinError(f"cannot read {file} ({' '.join(str(err).split())}); is it a `rein train` run?") from err
    if not isinstance(data, dict):
        raise ReinError(f"{file} is not a run configuration; is it a `rein train` run?")
    fields = Fields(data, str(file), "correct it to the value the run was trained with")
    for section in ("model", "data", "optim", "train", "eval"):
        fields.object(section, None, null=True)
    fields.text("recipe", None, null=True)
    if (train := fields.object("train", None, null=True)) is not None:
        train.integer("seed", None, null=True)
    return data


def _checkpoint_config(folder: Path) -> dict[str, Any]:
    """A checkpoint's config.json, checked ({} when the folder holds none)."""
    from rein_cli.engine.checkpoint import CONFIG_FILE, read_checkpoint_config  # torch, only for a run's checkpoint

    return read_checkpoint_config(folder) if (Path(folder) / CONFIG_FILE).is_file() else {}


def model_settings(model: Mapping[str, Any]) -> dict[str, Any]:
    """``{"model.rein.rank": 4, ...}``: the settings of a config's ``model`` section that differ from the defaults
    (any key the defaults lack counts as a difference), read generically so new settings are covered."""
    defaults = flatten(to_dict(ModelConfig()), "model")
    ours = flatten(dict(model), "model")
    skip = {f"model.{k}" for k in NOT_SETTINGS}
    return {k: v for k, v in ours.items() if k not in skip and (k not in defaults or defaults[k] != v)}


def default_label(results: Evaluation, recipe: str | None, model: Mapping[str, Any] | None) -> str:
    """The recipe's name when known, else a released adapter's name, else ``<method> <backbone>`` and the model
    settings that differ from the defaults (``rein dinov2-l model.rein.rank=4``)."""
    if recipe:
        return str(recipe)
    adapter = results.model.adapter if results.model is not None else None
    if adapter:
        return str(adapter)
    method = (model or {}).get("method") or results.method or "?"
    backbone = (model or {}).get("backbone") or results.backbone or "?"
    settings = model_settings(model or {})
    return " ".join([str(method), str(backbone), *(f"{k}={setting_text(v)}" for k, v in settings.items())])


def load(text: str) -> Input:
    """One input (``PATH`` or ``LABEL=PATH``) with its label and what is known of its training: the settings and
    the seed of its run (a run, or a checkpoint of one), else the settings its checkpoint records."""
    label, path = parse_input(text)
    file, run = find_results(path)
    results = read_results(file, "rein compare")
    recipe, model, seed, settings, folder = None, None, None, None, None
    if run is not None:
        config = _read_yaml(run.config)
        checkpoint = _checkpoint_config(run.checkpoint())
        recipe = config.get("recipe") or checkpoint.get("recipe")
        model = config.get("model") if isinstance(config.get("model"), dict) else checkpoint.get("model")
        seed = (config.get("train") or {}).get("seed")
        settings, folder = training_settings(config, checkpoint.get("iterations")), run.path
    else:
        where = results.model.checkpoint if results.model is not None else None
        if where and parse_hf_uri(str(where)) is None and Path(where).is_dir():
            folder = Path(where)
            checkpoint = _checkpoint_config(folder)
            recipe, model = checkpoint.get("recipe"), checkpoint.get("model")
            owner = RunDir.of_checkpoint(folder)  # a checkpoint of a run: the run's settings and seed
            if owner is not None:
                config = _read_yaml(owner.config)
                seed = (config.get("train") or {}).get("seed")
                settings = training_settings(config, checkpoint.get("iterations"))
            elif checkpoint:
                settings = checkpoint_settings(checkpoint)
    label_given = label is not None
    label = label or default_label(results, recipe, model if isinstance(model, dict) else None)
    return Input(
        given=str(path),
        file=file,
        results=results,
        label=label,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        settings=settings,
        weights=weights_of(results, folder),
        named=label_given,
        columns=tuple(scores(results)),
    )


# ---- the table ----------------------------------------------------------------------------------------------


def scores(results: Evaluation) -> dict[str, tuple[float, float | None]]:
    """column -> (mIoU, the paper's figure or None), in the results' order: each dataset with metrics (the pairs
    of a corruption evaluation left out), then one ``<dataset>-C`` column per corrupted dataset."""
    out: dict[str, tuple[float, float | None]] = {}
    for name, entry in results.datasets.items():
        if "/" in name or not _number(entry.mIoU):
            continue
        out[name] = (float(entry.mIoU), _paper(entry, results.split))
    for name, summary in (results.corruption.datasets if results.corruption else {}).items():
        if _number(summary.mIoU):  # a released figure for the whole protocol
            out[f"{name}-C"] = (float(summary.mIoU), _paper(summary, results.split))
    return out


def _paper(entry: DatasetResult | CorruptionSummary, split: str) -> float | None:
    """The published figure of an entry's ``reported`` list: the one for ``split``, else the first; None without."""
    reported = [r for r in entry.reported if _number(r.mIoU)]
    paper = next((r for r in reported if r.split == split), reported[0] if reported else None)
    return paper.mIoU if paper else None  # a `Published`: printed as published, marked when from another checkpoint


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def compare(inputs: Sequence[str], targets: Sequence[str] | None = None) -> Comparison:
    """The comparison of ``inputs`` (paths or ``LABEL=PATH``): rows in the order their labels first appear,
    columns in the order the datasets first appear, or ``targets`` (names of those columns) in that order."""
    if not inputs:
        raise ReinError("nothing to compare; give results.json files, evaluation folders or training runs")
    evaluations = [load(text) for text in inputs]
    split = _one_split(evaluations)
    seen: dict[str, None] = {}
    for e in evaluations:
        seen.update(dict.fromkeys(scores(e.results)))
    columns = _choose(list(seen), targets) if targets else list(seen)
    groups: dict[str, list[Input]] = {}
    for e in evaluations:
        groups.setdefault(e.label, []).append(e)
    rows, notes, firsts = [], [], {}
    for label, members in groups.items():
        _check_row(label, members)
        pooled = pools(members)
        names = numbered(row_names(label, pooled), taken=[r.label for r in rows])
        if len(pooled) > 1:
            notes.append(split_note(label, pooled, names))
        for name, group in zip(names, pooled, strict=True):
            rows.append(_row(name, group, columns))
            notes.append(label_note(name, group) or "")
            firsts[name] = group[0]  # a row's inputs were evaluated alike
    notes[:0] = [_mean_note(rows), inference_note(firsts) or ""]
    notes += [
        f"{row.label}: the paper's {column} {cell.paper.shown} was measured on {cell.paper.note}"
        for row in rows
        for column, cell in row.cells.items()
        if getattr(cell.paper, "note", "")
    ]
    differences = paired_differences(rows, columns)
    unrecorded = [str(e.file) for e in evaluations if not (e.file.parent / IMAGES_FILE).is_file()]
    if len(rows) > 1 and unrecorded:
        notes.append(
            f"no paired intervals for {len(unrecorded)} of {len(evaluations)} inputs: no {IMAGES_FILE} beside their "
            "results.json (evaluated before this release; evaluate again with rein eval --out)"
        )
    return Comparison(split, tuple(columns), tuple(rows), tuple(n for n in notes if n), differences)


def paired_differences(rows: Sequence[Row], columns: Sequence[str]) -> tuple[Difference, ...]:
    """For each pair of rows and each column both evaluated on the same images (every seed's images.npz there), the
    paired difference; the DG mean where both rows average the same datasets."""
    recorded: dict[Path, dict[str, ImageStats] | None] = {}

    def stats(e: Input) -> dict[str, ImageStats] | None:
        file = e.file.parent / IMAGES_FILE
        if file not in recorded:
            recorded[file] = read_image_stats(file) if file.is_file() else None
        return recorded[file]

    found = []
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:
            for column in [*columns, MEAN]:
                keys = [column] if column != MEAN else list(a.evaluations[0].results.mean_of)
                if column == MEAN and any(list(e.results.mean_of) != keys for e in (*a.evaluations, *b.evaluations)):
                    continue
                sides = [[stats(e) for e in row.evaluations] for row in (a, b)]
                if not keys or any(s is None or any(k not in s for k in keys) for side in sides for s in side):
                    continue
                seeds = [[[s[k] for k in keys] for s in side] for side in sides]
                try:
                    value, interval = paired_difference(seeds[0], seeds[1])
                except ValueError:  # other images, or none labeled
                    continue
                found.append(Difference(a.label, b.label, column, value, interval))
    return tuple(found)


def _one_split(evaluations: Sequence[Input]) -> str:
    splits: dict[str, list[str]] = {}
    for e in evaluations:
        splits.setdefault(e.results.split, []).append(str(e.file))
    if len(splits) > 1:
        listed = "; ".join(f"{split}: {', '.join(files)}" for split, files in splits.items())
        raise ReinError(f"the results mix splits ({listed}); compare evaluations of one split")
    return next(iter(splits))


def _choose(columns: list[str], targets: Sequence[str]) -> list[str]:
    """The columns ``targets`` name, in that order: exactly, or by the dataset's canonical name (``citys``)."""
    chosen = []
    for target in targets:
        match = next((c for c in columns if c == target), None) or next(
            (c for c in columns if _canonical(c) == _canonical(target)), None
        )
        if match is None:
            raise ReinError(f'--targets: no input has "{target}"; the targets there are: {", ".join(columns)}')
        chosen.append(match)
    return list(dict.fromkeys(chosen))


def _canonical(column: str) -> str:
    """A column's dataset by its canonical name, a corruption column's ``-C`` kept."""
    base = column.removesuffix("-C")
    return canonical(base) + column[len(base) :]


def _check_row(label: str, members: list[Input]) -> None:
    """The same results given twice under one label are refused (an evaluation given again is no second one)."""
    files = [e.file.resolve() for e in members]
    twice = sorted({str(f) for f in files if files.count(f) > 1})
    if twice:
        raise ReinError(f'row "{label}" has {", ".join(twice)} more than once; give each seed\'s results once')


def _row(label: str, members: list[Input], columns: list[str]) -> Row:
    per_input = [scores(e.results) for e in members]
    cells = {}
    for column in columns:
        values = tuple(s[column][0] for s in per_input if column in s)
        paper = next((s[column][1] for s in per_input if column in s and s[column][1] is not None), None)
        source = any(e.results.datasets[column].trained_on for e in members if column in e.results.datasets)
        cells[column] = Cell(values, paper, source)
    papers: dict[str, float] = {}  # every column's, the ones not shown too: the paper's mean needs them
    for s in per_input:
        papers.update({k: paper for k, (_, paper) in s.items() if paper is not None and k not in papers})
    means = tuple(float(e.results.mean_mIoU) for e in members if _number(e.results.mean_mIoU))
    cells[MEAN] = Cell(means, _paper_mean(members[0].results, papers))
    params = members[0].results.trainable_parameters
    return Row(label, tuple(members), cells, params / 1e6 if _number(params) else None)


def _paper_mean(results: Evaluation, papers: Mapping[str, float]) -> float | None:
    """The paper's figures averaged over the datasets of the row's mean (rounded to two decimals first, as the
    mean is), when the paper gives every one of them."""
    names = results.mean_of
    figures = [papers.get(n) for n in names]
    if not figures or any(f is None for f in figures):
        return None
    return sum(round(f, 2) for f in figures) / len(figures)


def _mean_note(rows: Sequence[Row]) -> str:
    def over(row: Row) -> str:
        names = row.evaluations[0].results.mean_of
        return ", ".join(dict.fromkeys(n.split("/")[0] + "-C" if "/" in n else n for n in names)) or "-"

    spans = {row.label: over(row) for row in rows}
    if len(set(spans.values())) == 1:
        return f"{MEAN}: each evaluation's own mean mIoU, over {next(iter(spans.values()))}"
    return f"{MEAN}: each evaluation's own mean mIoU, over " + "; ".join(f"{k}: {v}" for k, v in spans.items())
