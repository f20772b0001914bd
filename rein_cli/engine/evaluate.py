"""Evaluation: confusion matrices on the device, per-class IoU, mIoU per dataset, results.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rein_cli.config import InferenceMode, check_choice
from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.prepare import ensure_prepared
from rein_cli.data.registry import lookup
from rein_cli.data.transforms import EvalTransform
from rein_cli.engine.checkpoint import load_segmentor
from rein_cli.engine.inference import check_stride, infer
from rein_cli.engine.metrics import confusion_matrix, iou_from_confusion
from rein_cli.engine.report import json_safe
from rein_cli.errors import ReinError
from rein_cli.io import write_json
from rein_cli.models.segmentor import model_device
from rein_cli.progress import track


def evaluate(
    model: nn.Module | str | Path,
    datasets: list[str],
    *,
    out: Path | None = None,
    data_dir: Path,
    split: str = "val",
    mode: InferenceMode = "slide",
    stride: int | None = None,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """mIoU of ``model`` (a segmentor or a checkpoint directory) on each dataset; writes ``out/results.json``.

    Per dataset the confusion matrix is summed over all images (the official protocol); the overall
    mean is the plain average of the per-dataset mIoUs rounded to two decimals. Each dataset is resized
    by its own test protocol, whether given by name or as a prepared folder.
    """
    check_choice("mode", mode, InferenceMode)
    if not datasets:
        raise ReinError("no datasets to evaluate on; name at least one with --data")
    if not isinstance(model, nn.Module):
        model = load_segmentor(model, device)
    device_ = model_device(model)
    was_training = model.training
    model.eval()
    crop = model.crop_size
    stride = check_stride(stride, crop)
    results: dict[str, Any] = {
        "mode": mode,
        "crop": crop,
        "stride": stride if mode == "slide" else None,
        "model": {"backbone": model.config.backbone, "revision": model.config.backbone_revision, **model.provenance},
        "datasets": {},
    }
    manifests = [ensure_prepared(name, data_dir, progress=progress) for name in datasets]  # fail early on bad names
    for manifest in manifests:
        spec = lookup(manifest.dataset)  # the dataset's test protocol
        transform = EvalTransform(model.mean, model.std, spec.test_size_for(crop) if spec else None)
        data = SegmentationDataset(manifest, split, transform)
        if len(manifest.classes) != model.num_classes:
            raise ReinError(
                f"dataset {manifest.dataset} has {len(manifest.classes)} classes, the model {model.num_classes}"
            )
        cm = torch.zeros(model.num_classes, model.num_classes, dtype=torch.long, device=device_)
        for item in track(data, desc=f"eval {manifest.dataset}", unit="img", bar=progress):
            if item["label"] is None:
                raise ReinError(f"{item['path']} has no label in {manifest.path}; evaluation needs labels")
            image, label = item["image"][None].to(device_), item["label"].to(device_)
            scores = infer(model, image, mode=mode, crop=crop, stride=stride)
            if scores.shape[-2:] != label.shape:
                scores = F.interpolate(scores, size=label.shape, mode="bilinear", align_corners=False)
            cm += confusion_matrix(scores.argmax(1), label, model.num_classes, manifest.ignore_index)
        metrics = iou_from_confusion(cm)
        per_class = zip(manifest.classes, metrics["IoU"], metrics["Acc"], strict=True)
        results["datasets"][manifest.dataset] = {
            "mIoU": metrics["mIoU"],
            "mAcc": metrics["mAcc"],
            "aAcc": metrics["aAcc"],
            "images": len(data),
            "per_class": {c: {"IoU": iou, "Acc": acc} for c, iou, acc in per_class},
        }
    values = [round(r["mIoU"], 2) for r in results["datasets"].values()]
    results["mean_mIoU"] = sum(values) / len(values)
    model.train(was_training)
    if out is not None:
        write_json(Path(out) / "results.json", json_safe(results))
    return results
