"""Evaluation: confusion matrices on the device (sharded over processes), per-class IoU, mIoU per dataset, the
domain-generalisation mean over the target datasets, results.json and the report; benchmark-server predictions.

The protocol is the official one (docs/evaluation.md): each dataset resized by its own test protocol, slide or whole
inference, the confusion matrix summed over all images at the label's resolution, NaN classes left out, and the
mean the plain average of the per-dataset mIoUs rounded to two decimals over the datasets the model was not
trained on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rein_cli.config import InferenceMode, check_choice
from rein_cli.data.corruptions import CORRUPTIONS, SEVERITIES, corrupt_file, parse_spec
from rein_cli.data.corruptions import prepare as prepare_corruptions
from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.manifest import Manifest
from rein_cli.data.prepare import ensure_prepared
from rein_cli.data.registry import lookup
from rein_cli.data.transforms import EvalTransform
from rein_cli.engine import distributed
from rein_cli.engine.checkpoint import checkpoint_dir, load_segmentor, read_checkpoint_config
from rein_cli.engine.inference import check_stride, infer
from rein_cli.engine.metrics import confusion_matrix, dg_mean, iou_from_confusion
from rein_cli.engine.report import json_safe, write_report
from rein_cli.errors import ReinError
from rein_cli.io import check_writable, relative_path, save_image, write_json
from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_IDS
from rein_cli.models.segmentor import count_parameters, model_device
from rein_cli.progress import track

log = logging.getLogger(__name__)

SCHEMA = 2  # results.json's version: 2 adds schema, mean_of, trained_on, method, parameters, reported, confusion
PredictionIds = Literal["label-ids", "train-ids"]


def dataset_key(name: str) -> str:
    """A dataset's canonical name: the registry name for a name or alias (``citys`` -> ``cityscapes``), the part
    name of a released adapter's fraction (``cityscapes-1/16`` -> ``cityscapes``), otherwise the name itself."""
    text = str(name).strip()
    spec = lookup(text) or lookup(re.sub(r"-\d+/\d+$", "", text))
    return spec.name if spec else text


def training_datasets(value: str | Sequence[str] | None) -> list[str]:
    """``"gta5 + synthia"`` or ``["gta5", "synthia"]`` -> canonical names (a checkpoint's or a release's)."""
    if not value:
        return []
    parts = value.split("+") if isinstance(value, str) else list(value)
    return list(dict.fromkeys(dataset_key(p) for p in parts if str(p).strip()))


def is_training_dataset(name: str, trained_on: Sequence[str]) -> bool:
    """Whether ``name`` is (a part of, or holds) one of the datasets a model was trained on: ``acdc-fog`` is part
    of ``acdc``, so a model trained on ACDC is in its own domain on ACDC fog."""
    key = dataset_key(name)
    spec = lookup(key)
    for source in training_datasets(trained_on):
        other = lookup(source)
        if key == source or (spec and spec.parent == source) or (other and other.parent == key):
            return True
    return False


def checkpoint_facts(source: str | Path) -> dict[str, Any]:
    """What a checkpoint's config.json says about evaluation: its training datasets (``training_datasets``, or the
    ``trained_on`` string of older checkpoints) and the published figures of its recipe (``reported``)."""
    folder, _ = checkpoint_dir(source)
    config = read_checkpoint_config(folder)
    trained = config.get("training_datasets") or config.get("trained_on")
    reported = config.get("reported")
    return {"trained_on": training_datasets(trained), "reported": reported if isinstance(reported, dict) else {}}


def reported_for(reported: Mapping[str, Any] | None, dataset: str) -> list[dict[str, Any]]:
    """The published figures for ``dataset`` (keys compared canonically), as ``[{mIoU, split, source}]``."""
    key = dataset_key(dataset)
    for name, figures in (reported or {}).items():
        if dataset_key(name) == key:
            return [{"mIoU": f["mIoU"], "split": f["split"], "source": f["source"]} for f in figures]
    return []


class _EvalItems(Dataset):
    """A shard of a split: items ``indices`` of ``data``, transformed, with the image's original size; with
    ``corruption`` (name, severity) each image is corrupted at its original size before the transform (its seed
    from its path relative to ``root``, the dataset's folder), the label untouched."""

    def __init__(
        self,
        data: SegmentationDataset,
        transform: EvalTransform,
        indices: Sequence[int],
        corruption: tuple[str, int] | None = None,
        root: Path | None = None,
    ) -> None:
        self.data, self.transform, self.indices = data, transform, list(indices)
        self.corruption, self.root = corruption, root

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.data[self.indices[index]]
        size = tuple(item["image"].shape[:2])
        if self.corruption is not None:
            name, severity = self.corruption
            identity = relative_path(Path(item["path"]), self.root) if self.root else Path(item["path"]).name
            corrupted = corrupt_file(item["image"].numpy(), name, severity, identity=identity, source=item["path"])
            item["image"] = torch.from_numpy(np.ascontiguousarray(corrupted))
        image, label = self.transform(item["image"], item["label"])
        return {"image": image, "label": label, "path": item["path"], "size": size}


def _as_is(item: dict[str, Any]) -> dict[str, Any]:
    return item  # one image at a time (sizes differ): no collation


def _check_split(manifest: Manifest, split: str, predictions: bool) -> bool:
    """Whether ``split`` of ``manifest`` has labels; an error when it does not exist, or when it has none and no
    predictions are asked for."""
    if split not in manifest.splits:
        if split == "test":
            raise ReinError(
                f"dataset {manifest.dataset} ({manifest.path}) has no test split (its splits: "
                f"{', '.join(manifest.splits)}); `rein data prepare` keeps the test images of Cityscapes and ACDC when "
                "the archives hold them (prepare again with --overwrite after adding them)"
            )
        manifest.samples(split)  # raises: unknown split, with a "did you mean" and the splits there are
    samples = manifest.samples(split)
    unlabeled = sum(label is None for _, label in samples)
    if unlabeled and not predictions:
        raise ReinError(
            f"split {split} of {manifest.dataset} ({manifest.path}) has {unlabeled} of {len(samples)} images without "
            "a label; metrics need labels: evaluate a labeled split (e.g. --split val), or write predictions for "
            "the benchmark server with --save-predictions DIR"
        )
    return unlabeled == 0


def check_targets(
    datasets: Sequence[str | Path], data_dir: Path, split: str, predictions: bool, *, progress: bool = True
) -> tuple[list[Manifest], list[bool]]:
    """The manifests of ``datasets`` and whether their ``split`` is labeled; every problem (not prepared, no such
    split, no labels without ``predictions``) an error before anything is computed."""
    manifests = [ensure_prepared(name, data_dir, progress=progress) for name in datasets]
    return manifests, [_check_split(manifest, split, predictions) for manifest in manifests]


def prediction_names(paths: Sequence[str | Path]) -> list[Path]:
    """Each image's path relative to the folder all of a split's images share, with the suffix ``.png``:
    ``leftImg8bit/test/berlin/berlin_000000_000019_leftImg8bit.png`` -> ``berlin/berlin_..._leftImg8bit.png``."""
    paths = [Path(os.path.abspath(p)) for p in paths]
    if not paths:
        return []
    common = Path(os.path.commonpath([p.parent for p in paths]))
    return [p.relative_to(common).with_suffix(".png") for p in paths]


def _id_table(model: nn.Module, ids: PredictionIds, device: torch.device) -> torch.Tensor | None:
    """Train id -> Cityscapes label id (the benchmark servers' format), for a model with the Cityscapes classes."""
    if ids == "train-ids" or tuple(model.classes) != CITYSCAPES_CLASSES:
        return None
    return torch.tensor(CITYSCAPES_IDS, dtype=torch.uint8, device=device)


def evaluate(
    model: nn.Module | str | Path,
    datasets: list[str],
    *,
    out: Path | None = None,
    data_dir: Path,
    split: str = "val",
    mode: InferenceMode = "slide",
    stride: int | None = None,
    flip: bool = False,
    device: str = "auto",
    progress: bool = True,
    trained_on: Sequence[str] = (),
    reported: Mapping[str, Any] | None = None,
    save_predictions: Path | None = None,
    prediction_ids: PredictionIds = "label-ids",
    workers: int | None = None,
    corruption: str | None = None,
) -> dict[str, Any]:
    """mIoU of ``model`` (a segmentor, a checkpoint folder or ``hf://``) on each dataset's ``split``.

    Writes ``out/results.json``, ``out/report.md`` and per dataset an IoU bar chart and a confusion-matrix heat map
    (rank 0 only). ``trained_on``: the model's training datasets, which never enter the domain-generalisation mean
    (default for a checkpoint: its config.json's); ``reported``: published figures ``{dataset: [{mIoU, split,
    source}]}`` shown beside ours (default for a checkpoint: its config.json's). Under torch.distributed each
    process evaluates images rank, rank + world, ... and the confusion matrices are summed.
    ``save_predictions``: write each image's prediction as a PNG (``prediction_ids``: Cityscapes label ids, what
    the benchmark servers read, or train ids) under ``DIR/<dataset>/``, mirroring the images' paths; a split
    without labels is then allowed (no metrics for it). ``workers``: data-loading processes (default: 0 on the
    CPU, up to 4 on a GPU). ``corruption``: a spec (`rein_cli.data.corruptions.parse_spec`: ``all``, ``fog``,
    ``fog:3``, comma lists): each dataset is evaluated once per (corruption, severity), the entries keyed
    ``<dataset>/<corruption>-<severity>``, summed up in ``results["corruption"]`` (docs/evaluation.md).
    """
    check_choice("mode", mode, InferenceMode)
    pairs: list[tuple[str, int] | None] = list(parse_spec(corruption)) if corruption is not None else [None]
    check_choice("prediction_ids", prediction_ids, PredictionIds)
    if not datasets:
        raise ReinError("no datasets to evaluate on; name at least one with --data")
    # Every dataset and split is checked before the model is built or anything is computed.
    manifests, labeled = check_targets(datasets, data_dir, split, save_predictions is not None, progress=progress)
    if out is not None and distributed.is_main():
        check_writable(Path(out))
    if save_predictions is not None:
        check_writable(Path(save_predictions), "--save-predictions")
    if corruption is not None:  # OpenCV there, frost's overlays downloaded once (by the first process)
        if distributed.is_main():
            prepare_corruptions(pairs, progress=progress)
        distributed.barrier()
        prepare_corruptions(pairs)
    if not isinstance(model, nn.Module):
        facts = checkpoint_facts(model)
        trained_on = trained_on or facts["trained_on"]
        reported = reported if reported is not None else facts["reported"]
        model = load_segmentor(model, device)
    trained_on = training_datasets(trained_on)
    device_ = model_device(model)
    was_training = model.training
    model.eval()
    crop = model.crop_size
    stride = check_stride(stride, crop)
    for manifest in manifests:
        _check_classes(model, manifest)
    table = _id_table(model, prediction_ids, device_) if save_predictions is not None else None
    if workers is None:
        workers = 0 if device_.type == "cpu" else min(4, os.cpu_count() or 1)
    method = model.config.method
    results: dict[str, Any] = {
        "schema": SCHEMA,
        "split": split,
        "mode": mode,
        "crop": crop,
        "stride": stride if mode == "slide" else None,
        "flip": flip,
        "method": method,
        "backbone": model.config.backbone,
        "trainable_parameters": count_parameters(model, True),
        "trained_on": trained_on,
        "model": {"backbone": model.config.backbone, "revision": model.config.backbone_revision, **model.provenance},
        "datasets": {},
    }
    rank, world = distributed.rank(), distributed.world_size()
    for manifest, has_labels in zip(manifests, labeled, strict=True):
        spec = lookup(manifest.dataset)  # the dataset's test protocol
        transform = EvalTransform(model.mean, model.std, spec.test_size_for(crop) if spec else None)
        data = SegmentationDataset(manifest, split)
        names = prediction_names([image for image, _ in data.samples]) if save_predictions is not None else []
        for pair in pairs:
            key = manifest.dataset if pair is None else f"{manifest.dataset}/{pair[0]}-{pair[1]}"
            shard = _EvalItems(data, transform, range(rank, len(data), world), pair, manifest.root)  # no padding
            loader = DataLoader(shard, batch_size=None, num_workers=workers, collate_fn=_as_is)
            cm = torch.zeros(model.num_classes, model.num_classes, dtype=torch.long, device=device_)
            bar = progress and distributed.is_main()
            for k, item in enumerate(track(loader, desc=f"eval {key}", unit="img", bar=bar)):
                image = item["image"][None].to(device_, non_blocking=True)
                scores = infer(model, image, mode=mode, crop=crop, stride=stride, flip=flip)
                size = tuple(item["label"].shape) if item["label"] is not None else item["size"]
                if scores.shape[-2:] != size:
                    scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
                pred = scores.argmax(1)[0]
                if has_labels:
                    label = item["label"].to(device_, non_blocking=True)
                    cm += confusion_matrix(pred, label, model.num_classes, manifest.ignore_index)
                if save_predictions is not None:
                    ids = (table[pred] if table is not None else pred.to(torch.uint8)).cpu().numpy()
                    save_image(Path(save_predictions) / key / names[shard.indices[k]], ids)
            entry: dict[str, Any] = {"images": len(data)}
            if has_labels:
                distributed.all_reduce_sum(cm)
                metrics = iou_from_confusion(cm)
                per_class = zip(manifest.classes, metrics["IoU"], metrics["Acc"], strict=True)
                entry = {
                    "mIoU": metrics["mIoU"],
                    "mAcc": metrics["mAcc"],
                    "aAcc": metrics["aAcc"],
                    **entry,
                    "per_class": {c: {"IoU": iou, "Acc": acc} for c, iou, acc in per_class},
                    "confusion": cm.cpu().tolist(),
                }
            if save_predictions is not None:
                entry["predictions"] = str(Path(save_predictions) / key)
                entry["prediction_ids"] = "label-ids" if table is not None else "train-ids"
            entry["trained_on"] = is_training_dataset(manifest.dataset, trained_on)
            entry["reported"] = reported_for(reported, manifest.dataset) if pair is None else []
            if pair is not None:
                entry.update(dataset=manifest.dataset, corruption=pair[0], severity=pair[1])
            results["datasets"][key] = entry
    if corruption is not None:
        results["corruption"] = corruption_summary(results["datasets"], corruption, reported)
    model.train(was_training)
    add_mean(results)
    distributed.barrier()  # every process's predictions are written before rank 0 reports
    if out is not None and distributed.is_main():
        write_results(results, Path(out))
    return results


def add_mean(results: dict[str, Any]) -> None:
    """``mean_mIoU`` (and mAcc, aAcc) with ``mean_of``, the datasets that entered it: every evaluated dataset with
    metrics except the training datasets (marked ``trained_on`` in each entry), or all when all are."""
    scored = {name: entry for name, entry in results["datasets"].items() if "mIoU" in entry}
    excluded = {name for name, entry in scored.items() if entry.get("trained_on")}
    for key in ("mIoU", "mAcc", "aAcc"):
        mean, names = dg_mean({name: entry[key] for name, entry in scored.items()}, excluded)
        results[f"mean_{key}"] = mean
    results["mean_of"] = names
    if scored and excluded and set(names) == set(scored):
        results["mean_note"] = "every evaluated dataset is a training dataset: the mean is over all of them"
    elif excluded:
        results["mean_note"] = f"left out (training datasets): {', '.join(n for n in scored if n in excluded)}"
    else:
        results.pop("mean_note", None)


def corruption_summary(
    entries: Mapping[str, Mapping[str, Any]], spec: str, reported: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``{"spec", "datasets": {dataset: {"mIoU", "pairs", "per_corruption": {corruption: {"1".."5", "mean"}},
    "reported"}}}`` from the corrupted entries (``<dataset>/<corruption>-<severity>``, with metrics): every figure
    the mIoU rounded to two decimals, a mean the mean of the rounded figures it is over, rounded to two decimals.
    ``reported``: the published figures of ``<dataset>-c`` (e.g. a release's ``cityscapes-c``), the mean over the
    whole protocol, put beside ours only when every corruption was evaluated at every severity."""
    datasets: dict[str, Any] = {}
    for entry in entries.values():
        if "corruption" not in entry or entry.get("mIoU") is None or np.isnan(entry["mIoU"]):
            continue
        summary = datasets.setdefault(entry["dataset"], {"mIoU": None, "pairs": 0, "per_corruption": {}})
        summary["per_corruption"].setdefault(entry["corruption"], {})[str(entry["severity"])] = round(entry["mIoU"], 2)
        summary["pairs"] += 1
    for summary in datasets.values():
        figures = []
        for levels in summary["per_corruption"].values():
            values = [levels[k] for k in sorted(levels)]
            figures += values
            levels["mean"] = round(sum(values) / len(values), 2)
        summary["mIoU"] = round(sum(figures) / len(figures), 2)
    for name, summary in datasets.items():
        full = summary["pairs"] == len(CORRUPTIONS) * len(SEVERITIES)
        summary["reported"] = reported_for(reported, f"{name}-c") if full else []
    return {"spec": spec, "datasets": datasets}


def write_results(results: dict[str, Any], out: Path) -> None:
    """results.json, report.md and the per-dataset charts, each written atomically."""
    write_json(out / "results.json", json_safe(results))
    write_report(results, out)


def _check_classes(model: nn.Module, manifest: Manifest) -> None:
    if len(manifest.classes) != model.num_classes:
        source = model.provenance.get("checkpoint") or model.provenance.get("adapter") or "the model"
        raise ReinError(
            f"{source} predicts {model.num_classes} classes ({', '.join(model.classes[:3])}, ...) but dataset "
            f"{manifest.dataset} ({manifest.path}) has {len(manifest.classes)} "
            f"({', '.join(manifest.classes[:3])}, ...); evaluate on a dataset with the model's classes, or train "
            f"a model on it: rein train --data {manifest.dataset} --set model.num_classes={len(manifest.classes)}"
        )
    if tuple(manifest.classes) != tuple(model.classes):
        log.warning(
            "%s names its %d classes differently from the model (%s vs %s); they are compared by index",
            manifest.dataset,
            len(manifest.classes),
            manifest.classes[0],
            model.classes[0],
        )
