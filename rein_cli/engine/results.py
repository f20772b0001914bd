"""Evaluation results as types: a dataset's scores, its per-class rows, the corruption summary, the whole evaluation;
read and written (results.json, schema `SCHEMA`) here only.

In memory a missing figure is NaN (a class absent from labels and predictions); in results.json it is ``null``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rein_cli.config.figures import Published, Reported  # noqa: F401 (re-exported: results name their figures)
from rein_cli.documents import Fields, load_json
from rein_cli.engine.estimate import Estimate
from rein_cli.errors import ReinError
from rein_cli.io import write_json

SCHEMA = 2  # results.json's version: 2 adds schema, mean_of, trained_on, method, parameters, reported, confusion
RESULTS_FILE = "results.json"
FIX = "correct it, or evaluate the model again with `rein eval`"  # what to do about a value of the wrong type


def reported_figures(reported: Any) -> dict[str, tuple[Reported, ...]]:
    """``{dataset: [{mIoU, split, source[, checkpoint]}]}`` (a recipe's, a checkpoint's or a release's) as
    `Reported` figures."""
    return {
        str(name): tuple(f if isinstance(f, Reported) else Reported.from_json(f) for f in figures)
        for name, figures in (reported or {}).items()
    }


def reported_for(reported: Any, dataset: str) -> tuple[Reported, ...]:
    """The published figures for ``dataset`` among ``reported`` (`reported_figures`), names compared canonically
    (``citys`` finds ``cityscapes``)."""
    from rein_cli.data.registry import canonical

    key = canonical(dataset)
    return next((f for name, f in reported_figures(reported).items() if canonical(name) == key), ())


@dataclass(frozen=True)
class ClassScore:
    """One class of one dataset: IoU and accuracy in percent (NaN where undefined)."""

    IoU: float
    Acc: float


@dataclass(frozen=True)
class Interval:
    """A 95% bootstrap interval of a figure (percent): ``low`` to ``high``, from ``resamples`` resamples of the
    images drawn with ``seed``."""

    low: float
    high: float
    resamples: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "resamples": self.resamples, "seed": self.seed}

    @classmethod
    def read(cls, f: Fields | None) -> Interval | None:
        if f is None:
            return None
        return cls(f.number("low", null=True), f.number("high", null=True), f.integer("resamples"), f.integer("seed"))


@dataclass(frozen=True)
class ImageCase:
    """One image of a dataset shown in the shift report (the worst by its own mIoU): its path relative to the
    dataset's folder, its mIoU and pixel accuracy (percent), and the pictures drawn of it (``image``, ``label``,
    ``prediction``, ``errors``), paths relative to the evaluation's folder."""

    image: str
    mIoU: float
    aAcc: float
    files: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "mIoU": self.mIoU, "aAcc": self.aAcc, "files": dict(self.files)}

    @classmethod
    def read(cls, f: Fields) -> ImageCase:
        files = f.object("files")
        return cls(
            f.text("image"),
            f.number("mIoU", None, null=True),
            f.number("aAcc", None, null=True),
            {str(k): files.text(k) for k in files.data},
        )


@dataclass
class DatasetResult:
    """One evaluated dataset (or one corrupted copy of it, ``dataset/corruption-severity``).

    Without labels (a benchmark's test split, predictions only) the metrics are None."""

    images: int
    mIoU: float | None = None
    mAcc: float | None = None
    aAcc: float | None = None
    per_class: dict[str, ClassScore] = field(default_factory=dict)
    confusion: list[list[int]] | None = None  # (K, K) counts, rows the label, columns the prediction
    predictions: str | None = None  # the folder of its prediction PNGs
    prediction_ids: str | None = None
    trained_on: bool = False  # a training dataset of the model: left out of the DG mean
    reported: tuple[Reported, ...] = ()
    dataset: str | None = None  # a corrupted copy: the dataset, the corruption and its severity
    corruption: str | None = None
    severity: int | None = None
    model: str | None = None  # the model that evaluated it, when several share one evaluation
    interval: Interval | None = None  # the mIoU's 95% bootstrap interval over images
    worst: tuple[ImageCase, ...] = ()  # its worst images, worst first
    estimates: tuple[Estimate, ...] = ()  # estimated without its labels (rein eval --estimate)

    @property
    def labeled(self) -> bool:
        return self.mIoU is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.labeled:
            data |= {"mIoU": self.mIoU, "mAcc": self.mAcc, "aAcc": self.aAcc}
        data["images"] = self.images
        if self.labeled:
            data["per_class"] = {c: {"IoU": s.IoU, "Acc": s.Acc} for c, s in self.per_class.items()}
            data["confusion"] = self.confusion
        if self.predictions is not None:
            data |= {"predictions": self.predictions, "prediction_ids": self.prediction_ids}
        data |= {"trained_on": self.trained_on, "reported": [r.to_json() for r in self.reported]}
        if self.corruption is not None:
            data |= {"dataset": self.dataset, "corruption": self.corruption, "severity": self.severity}
        if self.model is not None:
            data["model"] = self.model
        if self.interval is not None:
            data["interval"] = self.interval.to_json()
        if self.worst:
            data["worst"] = [case.to_json() for case in self.worst]
        if self.estimates:
            data["estimates"] = [e.to_json() for e in self.estimates]
        return data

    @classmethod
    def read(cls, f: Fields) -> DatasetResult:
        labeled = "mIoU" in f.data
        scores = f.object("per_class", None, null=True)
        return cls(
            images=f.integer("images", 0),
            mIoU=f.number("mIoU", null=True) if labeled else None,
            mAcc=f.number("mAcc", None, null=True) if labeled else None,
            aAcc=f.number("aAcc", None, null=True) if labeled else None,
            per_class={
                c: ClassScore(s.number("IoU", None, null=True), s.number("Acc", None, null=True))
                for c, s in (scores.entries() if scores else [])
            },
            confusion=f.matrix("confusion"),
            predictions=f.text("predictions", None, null=True),
            prediction_ids=f.text("prediction_ids", None, null=True),
            trained_on=f.flag("trained_on", False),
            reported=tuple(Reported.read(r) for r in f.objects("reported", [])),
            dataset=f.text("dataset", None, null=True),
            corruption=f.text("corruption", None, null=True),
            severity=f.integer("severity", None, null=True),
            model=f.text("model", None, null=True),
            interval=Interval.read(f.object("interval", None, null=True)),
            worst=tuple(ImageCase.read(c) for c in f.objects("worst", [])),
            estimates=tuple(Estimate.read(e) for e in f.objects("estimates", [])),
        )


@dataclass
class CorruptionSummary:
    """One dataset under the corruptions: the mIoU per corruption and severity (``"1"``..``"5"`` and the row's
    ``"mean"``, each rounded to two decimals), the mean over every pair, and the published figure of the whole
    protocol (only when every corruption was evaluated at every severity)."""

    mIoU: float | None
    pairs: int
    per_corruption: dict[str, dict[str, float]]
    reported: tuple[Reported, ...] = ()

    @property
    def levels(self) -> list[int]:
        """The severities this summary has figures for, in order."""
        return sorted({int(k) for row in self.per_corruption.values() for k in row if k != "mean"})

    def to_json(self) -> dict[str, Any]:
        return {
            "mIoU": self.mIoU,
            "pairs": self.pairs,
            "per_corruption": self.per_corruption,
            "reported": [r.to_json() for r in self.reported],
        }

    @classmethod
    def read(cls, f: Fields) -> CorruptionSummary:
        rows = f.object("per_corruption", None, null=True)
        return cls(
            f.number("mIoU", None, null=True),
            f.integer("pairs", 0),
            {name: {k: row.number(k, null=True) for k in row.data} for name, row in (rows.entries() if rows else [])},
            tuple(Reported.read(r) for r in f.objects("reported", [])),
        )


@dataclass
class Corruption:
    """The corruption protocol's summary: the ``--corruption`` spec and a summary per dataset."""

    spec: str
    datasets: dict[str, CorruptionSummary]

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "datasets": {k: v.to_json() for k, v in self.datasets.items()}}

    @classmethod
    def read(cls, f: Fields) -> Corruption:
        datasets = f.object("datasets", None, null=True)
        summaries = {k: CorruptionSummary.read(v) for k, v in (datasets.entries() if datasets else [])}
        return cls(f.text("spec", ""), summaries)


@dataclass(frozen=True)
class ModelInfo:
    """Which weights were evaluated: the backbone and its Hub revision, and the provenance of the rest (the
    checkpoint, a Hub repo and commit, a released adapter's name, source URL and SHA-256)."""

    backbone: str
    revision: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint(self) -> str | None:
        return self.provenance.get("checkpoint")

    @property
    def adapter(self) -> str | None:
        return self.provenance.get("adapter")

    def to_json(self) -> dict[str, Any]:
        return {"backbone": self.backbone, "revision": self.revision, **self.provenance}

    @classmethod
    def read(cls, f: Fields) -> ModelInfo:
        rest = {k: v for k, v in f.data.items() if k not in ("backbone", "revision")}
        return cls(f.text("backbone", "?"), f.text("revision", None, null=True), rest)


@dataclass(frozen=True)
class EvaluatedModel:
    """One of the models of an evaluation that uses several (a backbone's releases: one for ACDC, one for the rest)
    and the targets it evaluated."""

    name: str  # a release name, a checkpoint folder or hf://org/name
    info: ModelInfo
    method: str
    trainable_parameters: int
    trained_on: tuple[str, ...]
    crop: int
    targets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.info.to_json(),
            "method": self.method,
            "trainable_parameters": self.trainable_parameters,
            "trained_on": list(self.trained_on),
            "crop": self.crop,
            "targets": list(self.targets),
        }

    @classmethod
    def read(cls, f: Fields) -> EvaluatedModel:
        own = ("name", "method", "trainable_parameters", "trained_on", "crop", "targets")
        info = ModelInfo.read(Fields({k: v for k, v in f.data.items() if k not in own}, f.source, f.advice, f.where))
        return cls(
            f.text("name"),
            info,
            f.text("method"),
            f.integer("trainable_parameters", None, null=True) or 0,
            tuple(f.texts("trained_on", [])),
            f.integer("crop", None, null=True) or 0,
            tuple(f.texts("targets", [])),
        )


@dataclass
class Evaluation:
    """One evaluation: the setting, the model(s), a `DatasetResult` per dataset (in order), the corruption summary,
    and the domain-generalisation mean over ``mean_of`` (every dataset with metrics but the training datasets)."""

    split: str = "val"
    mode: str | None = None
    crop: int | None = None
    stride: int | None = None  # the slide stride; None for whole-image inference
    flip: bool = False
    precision: str | None = None  # what inference ran in: bf16 (autocast) or fp32; None: not recorded (older rein)
    method: str | None = None
    backbone: str | None = None
    trainable_parameters: int | None = None
    trained_on: list[str] = field(default_factory=list)
    model: ModelInfo | None = None
    datasets: dict[str, DatasetResult] = field(default_factory=dict)
    models: list[EvaluatedModel] | None = None  # several models (rein eval --backbone with ACDC targets); else None
    corruption: Corruption | None = None
    mean_mIoU: float = math.nan
    mean_mAcc: float = math.nan
    mean_aAcc: float = math.nan
    mean_of: list[str] = field(default_factory=list)
    mean_note: str | None = None
    mean_interval: Interval | None = None  # the DG mean's 95% bootstrap interval (each dataset's images resampled)
    calibrated_on: str | None = None  # the labeled dataset the label-free estimates were calibrated on
    assumed: list[str] = field(default_factory=list)  # a release's settings rein assumed: "name: key = value (why)"
    # per dataset key, what was recorded of each image (rein_cli.engine.imagestats.ImageStats; images.npz), and the
    # manifest it was read from; in memory only
    image_stats: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    manifests: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def setting(self) -> str:
        """How the scores were made, as the reports state it: ``split: val; inference: slide (crop 512, stride
        341); flip test-time augmentation: no; precision: bf16`` (the precision where recorded)."""
        stride = f", stride {self.stride}" if self.stride else ""
        return (
            f"split: {self.split}; inference: {self.mode} (crop {self.crop}{stride}); "
            f"flip test-time augmentation: {'yes' if self.flip else 'no'}"
            + (f"; precision: {self.precision}" if self.precision else "")
        )

    def scored(self) -> dict[str, DatasetResult]:
        """The datasets with metrics, in order."""
        return {name: entry for name, entry in self.datasets.items() if entry.labeled}

    def to_json(self) -> dict[str, Any]:
        """results.json's content: NaN written as null."""
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "split": self.split,
            "mode": self.mode,
            "crop": self.crop,
            "stride": self.stride,
            "flip": self.flip,
            "precision": self.precision,
            "method": self.method,
            "backbone": self.backbone,
            "trainable_parameters": self.trainable_parameters,
            "trained_on": list(self.trained_on),
            "model": self.model.to_json() if self.model is not None else None,
            "datasets": {name: entry.to_json() for name, entry in self.datasets.items()},
        }
        if self.models is not None:
            data["models"] = [m.to_json() for m in self.models]
        if self.corruption is not None:
            data["corruption"] = self.corruption.to_json()
        data |= {
            "mean_mIoU": self.mean_mIoU,
            "mean_mAcc": self.mean_mAcc,
            "mean_aAcc": self.mean_aAcc,
            "mean_of": list(self.mean_of),
        }
        if self.mean_note is not None:
            data["mean_note"] = self.mean_note
        if self.mean_interval is not None:
            data["mean_interval"] = self.mean_interval.to_json()
        if self.calibrated_on is not None:
            data["calibrated_on"] = self.calibrated_on
        if self.assumed:
            data["assumed"] = list(self.assumed)
        return _json_safe(data)

    @classmethod
    def from_json(cls, data: Any, source: str | Path = RESULTS_FILE, reader: str = "this rein") -> Evaluation:
        """An evaluation from results.json's content; an error naming ``source`` (and the ``reader``, for a file of
        another schema) for anything that is not one of schema `SCHEMA`."""
        if not isinstance(data, dict) or not isinstance(data.get("datasets"), dict):
            raise ReinError(f"{source} is not a rein results.json (no datasets); give one written by `rein eval`")
        schema = data.get("schema")
        if schema != SCHEMA:
            what = "no schema (an older rein)" if schema is None else f"schema {schema!r}"
            raise ReinError(
                f"{source} is a results.json of {what}; {reader} reads schema {SCHEMA}: evaluate the model again "
                "with this version (rein eval)"
            )
        f = Fields(data, str(source), FIX)
        model, corruption = f.object("model", None, null=True), f.object("corruption", None, null=True)
        models = f.objects("models") if f.get("models") is not None else None
        return cls(
            split=f.text("split", "val"),
            mode=f.text("mode", None, null=True),
            crop=f.integer("crop", None, null=True),
            stride=f.integer("stride", None, null=True),
            flip=f.flag("flip", False),
            precision=f.text("precision", None, null=True),
            method=f.text("method", None, null=True),
            backbone=f.text("backbone", None, null=True),
            trainable_parameters=f.integer("trainable_parameters", None, null=True),
            trained_on=f.texts("trained_on", []),
            model=ModelInfo.read(model) if model is not None else None,
            datasets={name: DatasetResult.read(e) for name, e in f.object("datasets").entries()},
            models=[EvaluatedModel.read(m) for m in models] if models is not None else None,
            corruption=Corruption.read(corruption) if corruption is not None else None,
            mean_mIoU=f.number("mean_mIoU", None, null=True),
            mean_mAcc=f.number("mean_mAcc", None, null=True),
            mean_aAcc=f.number("mean_aAcc", None, null=True),
            mean_of=f.texts("mean_of", []),
            mean_note=f.text("mean_note", None, null=True),
            mean_interval=Interval.read(f.object("mean_interval", None, null=True)),
            calibrated_on=f.text("calibrated_on", None, null=True),
            assumed=f.texts("assumed", []),
        )


def read_results(file: Path, reader: str = "this rein") -> Evaluation:
    """A results.json written by `rein eval` (schema `SCHEMA`), checked."""
    try:
        data = load_json(Path(file).read_text(encoding="utf-8"), str(file))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ReinError(f"{file} is not valid JSON ({err}); give a results.json written by `rein eval`") from err
    except OSError as err:
        raise ReinError(f"cannot read {file}: {err.strerror}") from err
    return Evaluation.from_json(data, file, reader)


def write_results_file(results: Evaluation, out: Path) -> Path:
    """``out/results.json``, written atomically."""
    path = Path(out) / RESULTS_FILE
    write_json(path, results.to_json())
    return path


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
