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
from rein_cli.engine.estimate import Estimate
from rein_cli.errors import ReinError
from rein_cli.io import write_json

SCHEMA = 2  # results.json's version: 2 adds schema, mean_of, trained_on, method, parameters, reported, confusion
RESULTS_FILE = "results.json"


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
    def from_json(cls, data: Any) -> Interval | None:
        if not isinstance(data, dict):
            return None
        return cls(_figure(data.get("low")), _figure(data.get("high")), int(data["resamples"]), int(data["seed"]))


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
    def from_json(cls, data: Any) -> ImageCase:
        return cls(str(data["image"]), _figure(data.get("mIoU")), _figure(data.get("aAcc")), dict(data["files"]))


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
    def from_json(cls, data: dict[str, Any]) -> DatasetResult:
        labeled = "mIoU" in data
        return cls(
            images=int(data.get("images", 0)),
            mIoU=_figure(data.get("mIoU")) if labeled else None,
            mAcc=_figure(data.get("mAcc")) if labeled else None,
            aAcc=_figure(data.get("aAcc")) if labeled else None,
            per_class={
                c: ClassScore(_figure(s.get("IoU")), _figure(s.get("Acc")))
                for c, s in data.get("per_class", {}).items()
            },
            confusion=data.get("confusion"),
            predictions=data.get("predictions"),
            prediction_ids=data.get("prediction_ids"),
            trained_on=bool(data.get("trained_on", False)),
            reported=tuple(Reported.from_json(r) for r in data.get("reported") or []),
            dataset=data.get("dataset"),
            corruption=data.get("corruption"),
            severity=data.get("severity"),
            model=data.get("model"),
            interval=Interval.from_json(data.get("interval")),
            worst=tuple(ImageCase.from_json(c) for c in data.get("worst") or []),
            estimates=tuple(Estimate.from_json(e) for e in data.get("estimates") or []),
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
    def from_json(cls, data: dict[str, Any]) -> CorruptionSummary:
        return cls(
            _figure(data.get("mIoU")),
            int(data.get("pairs", 0)),
            {name: dict(row) for name, row in (data.get("per_corruption") or {}).items()},
            tuple(Reported.from_json(r) for r in data.get("reported") or []),
        )


@dataclass
class Corruption:
    """The corruption protocol's summary: the ``--corruption`` spec and a summary per dataset."""

    spec: str
    datasets: dict[str, CorruptionSummary]

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "datasets": {k: v.to_json() for k, v in self.datasets.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Corruption:
        datasets = {k: CorruptionSummary.from_json(v) for k, v in (data.get("datasets") or {}).items()}
        return cls(str(data.get("spec", "")), datasets)


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
    def from_json(cls, data: dict[str, Any] | None) -> ModelInfo:
        rest = dict(data or {})
        return cls(str(rest.pop("backbone", "?")), rest.pop("revision", None), rest)


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
    def from_json(cls, data: dict[str, Any]) -> EvaluatedModel:
        rest = dict(data)
        fields = [
            rest.pop(k, None) for k in ("name", "method", "trainable_parameters", "trained_on", "crop", "targets")
        ]
        name, method, parameters, trained_on, crop, targets = fields
        info = ModelInfo.from_json(rest)
        return cls(
            str(name),
            info,
            str(method),
            int(parameters or 0),
            tuple(trained_on or ()),
            int(crop or 0),
            tuple(targets or ()),
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
        try:
            corruption = data.get("corruption")
            models = data.get("models")
            return cls(
                split=str(data.get("split", "val")),
                mode=data.get("mode"),
                crop=data.get("crop"),
                stride=data.get("stride"),
                flip=bool(data.get("flip", False)),
                method=data.get("method"),
                backbone=data.get("backbone"),
                trainable_parameters=data.get("trainable_parameters"),
                trained_on=list(data.get("trained_on") or []),
                model=ModelInfo.from_json(data["model"]) if isinstance(data.get("model"), dict) else None,
                datasets={name: DatasetResult.from_json(e) for name, e in data["datasets"].items()},
                models=[EvaluatedModel.from_json(m) for m in models] if isinstance(models, list) else None,
                corruption=Corruption.from_json(corruption) if isinstance(corruption, dict) else None,
                mean_mIoU=_figure(data.get("mean_mIoU")),
                mean_mAcc=_figure(data.get("mean_mAcc")),
                mean_aAcc=_figure(data.get("mean_aAcc")),
                mean_of=list(data.get("mean_of") or []),
                mean_note=data.get("mean_note"),
                mean_interval=Interval.from_json(data.get("mean_interval")),
                calibrated_on=data.get("calibrated_on"),
                assumed=[str(line) for line in data.get("assumed") or []],
            )
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise ReinError(
                f"{source} is a damaged results.json ({type(err).__name__}: {err}); evaluate again"
            ) from err


def read_results(file: Path, reader: str = "this rein") -> Evaluation:
    """A results.json written by `rein eval` (schema `SCHEMA`), checked."""
    try:
        data = json.loads(Path(file).read_text(encoding="utf-8"))
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


def _figure(value: Any) -> float:
    """A figure of results.json: null -> NaN."""
    return math.nan if value is None else float(value)


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
