"""Scoring one model on prepared datasets: each image through inference, the confusion matrix summed on the device
(over processes too), a `DatasetResult` per dataset (and per corruption pair); predictions as PNGs when asked; and,
before that, what it will cost on the CPU (`cpu_estimate`)."""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from rein_cli.config import PredictionIds
from rein_cli.data.corruptions import corrupt_file
from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.manifest import Manifest
from rein_cli.data.registry import lookup, overlaps
from rein_cli.data.transforms import EvalTransform
from rein_cli.engine import distributed
from rein_cli.engine.imagestats import ImageStats, Recorder, class_probabilities
from rein_cli.engine.inference import auto_window_batch, infer_stream, slide_windows
from rein_cli.engine.metrics import confusion_matrix, iou_from_confusion
from rein_cli.engine.results import ClassScore, DatasetResult, reported_for
from rein_cli.errors import ReinError
from rein_cli.io import relative_path, save_image
from rein_cli.labels import CITYSCAPES_CLASSES, CITYSCAPES_IDS
from rein_cli.models.segmentor import model_device
from rein_cli.progress import duration, track

log = logging.getLogger(__name__)


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


def _images(
    items: Iterable[dict[str, Any]], fed: deque[dict[str, Any]], device: torch.device
) -> Iterator[torch.Tensor]:
    """Each item's image on ``device``, the item kept in ``fed`` until its scores come back."""
    for item in items:
        fed.append(item)
        yield item["image"].to(device, non_blocking=True)


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


def check_classes(model: nn.Module, manifest: Manifest) -> None:
    """An error when the dataset has another number of classes than the model; a warning when it names them
    differently."""
    if not manifest.classes:  # a plain folder of images: the model's classes
        return
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


def _finish(
    scores: torch.Tensor,
    item: dict[str, Any],
    has_labels: bool,
    ignore_index: int,
    scores_are: str,
    recorder: Recorder,
    index: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Image ``index``'s (1, K, h, w) scores at its label's size: its (H, W) prediction and confusion matrix (None
    without a label), both recorded."""
    size = tuple(item["label"].shape) if item["label"] is not None else item["size"]
    if scores.shape[-2:] != size:
        scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)
    pred = scores.argmax(1)[0]
    label = item["label"].to(scores.device, non_blocking=True) if has_labels else None
    image_cm = confusion_matrix(pred, label, scores.shape[1], ignore_index) if label is not None else None
    recorder.add(index, class_probabilities(scores, scores_are), pred, label, image_cm, ignore_index)
    return pred, image_cm


def score_datasets(
    model: nn.Module,
    manifests: Sequence[tuple[Manifest, bool]],
    *,
    split: str,
    mode: str,
    stride: int,
    flip: bool,
    progress: bool,
    pairs: Sequence[tuple[str, int] | None],
    trained_on: Sequence[str],
    reported: Mapping[str, Any] | None,
    save_predictions: Path | None,
    prediction_ids: PredictionIds,
    workers: int | None,
    keep_worst: int = 0,
    window_batch: int | None = None,
    autocast: torch.dtype | None = None,
) -> tuple[dict[str, DatasetResult], dict[str, ImageStats]]:
    """``model`` (in eval mode) on each (manifest, has labels) pair's ``split``, once per corruption pair (None: the
    clean images): the entries keyed ``<dataset>`` or ``<dataset>/<corruption>-<severity>``, and each one's images'
    statistics (with the ``keep_worst`` images of lowest mIoU of each clean dataset). Each manifest is checked
    first (`check_classes`). The windows of consecutive images of one size share model calls, ``window_batch`` at
    most (None: automatic; `infer_stream`). ``autocast``: the model's type under autocast
    (`rein_cli.engine.precision`; None: float32); the scores are float32 either way."""
    device = model_device(model)
    crop = model.crop_size
    table = _id_table(model, prediction_ids, device) if save_predictions is not None else None
    if workers is None:
        workers = 0 if device.type == "cpu" else min(4, os.cpu_count() or 1)
    rank, world = distributed.rank(), distributed.world_size()
    scores_are = getattr(getattr(model, "head", None), "scores_are", "probabilities")
    entries: dict[str, DatasetResult] = {}
    stats: dict[str, ImageStats] = {}
    for manifest, has_labels in manifests:
        spec = lookup(manifest.dataset)  # the dataset's test protocol
        transform = EvalTransform(model.mean, model.std, spec.test_size_for(crop) if spec else None)
        data = SegmentationDataset(manifest, split)
        names = prediction_names([image for image, _ in data.samples]) if save_predictions is not None else []
        paths = [Path(image).relative_to(manifest.root).as_posix() for image, _ in data.samples]
        for pair in pairs:
            key = manifest.dataset if pair is None else f"{manifest.dataset}/{pair[0]}-{pair[1]}"
            shard = _EvalItems(data, transform, range(rank, len(data), world), pair, manifest.root)  # no padding
            loader = DataLoader(shard, batch_size=None, num_workers=workers, collate_fn=_as_is)
            cm = torch.zeros(model.num_classes, model.num_classes, dtype=torch.long, device=device)
            worst = keep_worst if pair is None else 0
            recorder = Recorder(model.num_classes, len(data), paths, labeled=has_labels, split=split, keep_worst=worst)
            bar = progress and distributed.is_main()
            fed: deque[dict[str, Any]] = deque()  # the items whose images are in the stream, in order
            images = _images(track(loader, desc=f"eval {key}", unit="img", bar=bar), fed, device)
            stream = infer_stream(
                model,
                images,
                mode=mode,
                crop=crop,
                stride=stride,
                flip=flip,
                window_batch=window_batch,
                autocast=autocast,
            )
            for k, scores in enumerate(stream):
                item, index = fed.popleft(), shard.indices[k]
                pred, image_cm = _finish(scores, item, has_labels, manifest.ignore_index, scores_are, recorder, index)
                if image_cm is not None:
                    cm += image_cm
                if save_predictions is not None:
                    ids = (table[pred] if table is not None else pred.to(torch.uint8)).cpu().numpy()
                    save_image(Path(save_predictions) / key / names[index], ids)
            entry = DatasetResult(images=len(data))
            if has_labels:
                distributed.all_reduce_sum(cm)
                metrics = iou_from_confusion(cm)
                entry.mIoU, entry.mAcc, entry.aAcc = metrics["mIoU"], metrics["mAcc"], metrics["aAcc"]
                per_class = zip(manifest.classes, metrics["IoU"], metrics["Acc"], strict=True)
                entry.per_class = {c: ClassScore(iou, acc) for c, iou, acc in per_class}
                entry.confusion = cm.cpu().tolist()
            if save_predictions is not None:
                entry.predictions = str(Path(save_predictions) / key)
                entry.prediction_ids = "label-ids" if table is not None else "train-ids"
            entry.trained_on = overlaps(manifest.dataset, trained_on)
            entry.reported = reported_for(reported, manifest.dataset) if pair is None else ()
            if pair is not None:
                entry.dataset, entry.corruption, entry.severity = manifest.dataset, pair[0], pair[1]
            entries[key] = entry
            stats[key] = recorder.finish(distributed.gather_objects(recorder) if world > 1 else None)
    return entries, stats


# The report after the scores (intervals, charts, report.md and report.html): seconds on a CPU, once and per entry
# (benchmarks/cpu_estimate.py)
REPORT_SECONDS, REPORT_SECONDS_PER_ENTRY = 3.0, 1.5
WARM_UP_SECONDS = 20.0  # a first run this long is the measure (its one-time costs are small beside it)
TIMED_SECONDS = 2.0  # after the first run, runs are timed until this long in all, and the median taken


@dataclass(frozen=True)
class CpuEstimate:
    """What an evaluation will take on the CPU, from timings on this machine: ``images`` image evaluations (each
    image once per corruption pair) read, corrupted, transformed and finished at ``per_image`` seconds besides their
    ``passes`` windows or whole images (``what``) through the model at ``per_pass`` seconds each (timed in batches,
    as the evaluation runs them), and the report."""

    seconds: float
    images: int
    per_image: float
    passes: int
    per_pass: float
    what: str

    def __str__(self) -> str:
        return (
            f"on the CPU this takes about {duration(self.seconds)} ({self.passes} {self.what} at {self.per_pass:.2f} "
            f"s, {self.images} images read and scored at {self.per_image:.2f} s); a GPU is much faster (--device cuda)"
        )


def timed(work: Callable[[], Any], *, again: bool = True) -> float:
    """Seconds ``work`` takes: the median of its runs after the first (which pays one-time costs: lazy set-up,
    caches), until `TIMED_SECONDS` in all (at most 50); the first alone when it took `WARM_UP_SECONDS` or more, or
    ``again`` is off. The median, so that a moment when other processes hold the CPU does not count as the rule."""
    start = time.perf_counter()
    work()
    first = time.perf_counter() - start
    if first >= WARM_UP_SECONDS or not again:
        return first
    runs: list[float] = []
    while not runs or (sum(runs) < TIMED_SECONDS and len(runs) < 50):
        start = time.perf_counter()
        work()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def cpu_estimate(
    model: nn.Module,
    manifests: Sequence[tuple[Manifest, bool]],
    *,
    split: str,
    mode: str,
    stride: int,
    flip: bool,
    pairs: Sequence[tuple[str, int] | None],
    window_batch: int | None = None,
    autocast: torch.dtype | None = None,
) -> CpuEstimate:
    """The time `score_datasets` with these settings, and the report after it, will take, measured on each dataset's
    first image: read, corrupted (per pair) and transformed as the evaluation does; the model called on a batch of
    windows (or whole images) of its size, as many as the evaluation's window batch, the time divided per window;
    its scores finished (resized, confusion matrix, statistics) as the evaluation does; plus `REPORT_SECONDS`. Every
    image of a dataset is taken to cost what its first one does. The model runs under ``autocast`` as the
    evaluation will."""
    crop, K = model.crop_size, model.num_classes
    rank, world = distributed.rank(), distributed.world_size()
    scores_are = getattr(getattr(model, "head", None), "scores_are", "probabilities")
    calls: dict[tuple[int, int], float] = {}
    seconds, images, passes, per_image = REPORT_SECONDS, 0, 0, 0.0
    for manifest, has_labels in manifests:
        spec = lookup(manifest.dataset)
        transform = EvalTransform(model.mean, model.std, spec.test_size_for(crop) if spec else None)
        data = SegmentationDataset(manifest, split)
        count = len(range(rank, len(data), world))
        for pair in pairs:
            items = _EvalItems(data, transform, [0], pair, manifest.root)
            start = time.perf_counter()
            item = items[0]  # a slow corruption: computed once, then cached, so its first time is what counts
            read_seconds = time.perf_counter() - start if pair is not None else timed(partial(items.__getitem__, 0))
            height, width = item["image"].shape[-2:]
            recorder = Recorder(K, 1, [""], labeled=has_labels, split=split)
            scores = torch.zeros(1, K, height, width)
            finish = partial(_finish, scores, item, has_labels, manifest.ignore_index, scores_are, recorder, 0)
            image_seconds = read_seconds + timed(finish)
            boxes = [(0, height, 0, width)] if mode == "whole" else slide_windows(height, width, crop, stride)
            for y1, y2, x1, x2 in boxes:
                shape = (y2 - y1, x2 - x1)
                if shape not in calls:
                    cast = torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None)
                    with torch.no_grad(), cast:
                        n = window_batch or auto_window_batch(model, shape, torch.device("cpu"))
                        calls[shape] = timed(partial(model.semantic_scores, torch.zeros(n, 3, *shape))) / n
            flips = 2 if flip else 1
            model_seconds = sum(calls[(y2 - y1, x2 - x1)] for y1, y2, x1, x2 in boxes) * flips
            seconds += count * (image_seconds + model_seconds) + REPORT_SECONDS_PER_ENTRY
            per_image += count * image_seconds
            images += count
            passes += count * len(boxes) * flips
    what = "whole images" if mode == "whole" else f"windows of up to {crop}x{crop}"
    per_pass = max(calls.values()) if calls else 0.0
    return CpuEstimate(seconds, images, per_image / max(images, 1), passes, per_pass, what)
