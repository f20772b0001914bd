"""Evaluation: confusion matrices on the device, per-class IoU, mIoU per dataset, a table and results.json."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.manifest import read_manifest
from rein_cli.data.registry import lookup, resolve_dataset
from rein_cli.data.transforms import EvalTransform
from rein_cli.engine.inference import check_mode, default_stride, infer
from rein_cli.engine.metrics import confusion_matrix, iou_from_confusion
from rein_cli.errors import ReinError
from rein_cli.io import write_json
from rein_cli.models.segmentor import model_device

log = logging.getLogger(__name__)


def evaluate(model: nn.Module | str | Path, datasets: list[str], *, out: Path | None = None, data_dir: Path,
             split: str = "val", mode: str = "slide", stride: int | None = None, device: str = "auto",
             progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """mIoU of ``model`` (a segmentor or a checkpoint directory) on each dataset; writes ``out/results.json``.

    Per dataset the confusion matrix is summed over all images (the official protocol); the overall
    mean is the plain average of the per-dataset mIoUs rounded to two decimals.
    """
    check_mode(mode)
    if not datasets:
        raise ReinError("no datasets to evaluate on; name at least one with --data")
    if not isinstance(model, nn.Module):
        from rein_cli.engine.checkpoint import load_segmentor
        from rein_cli.engine.train import resolve_device

        model = load_segmentor(model, resolve_device(device))
    device_ = model_device(model)
    was_training = model.training
    model.eval()
    crop = model.crop_size
    stride = stride or default_stride(crop)
    results: dict[str, Any] = {"mode": mode, "crop": crop, "stride": stride if mode == "slide" else None, "datasets": {}}
    manifests = [resolve_dataset(name, data_dir, progress=progress) for name in datasets]  # fail early on bad names
    for manifest in manifests:
        info = read_manifest(manifest)
        spec = lookup(info.dataset)  # the dataset's test protocol, whether named or given as a folder
        data = SegmentationDataset(info, split, EvalTransform(model.mean, model.std, spec.test_size_for(crop) if spec else None))
        classes = data.manifest.classes
        if len(classes) != model.num_classes:
            raise ReinError(f"dataset {data.manifest.dataset} has {len(classes)} classes, the model {model.num_classes}")
        cm = torch.zeros(model.num_classes, model.num_classes, dtype=torch.long, device=device_)
        for item in tqdm(data, desc=f"eval {data.manifest.dataset}", unit="img", disable=not progress, leave=False):
            image, label = item["image"][None].to(device_), item["label"].to(device_)
            if label is None:
                raise ReinError(f"{item['path']} has no label in {manifest}; evaluation needs labels")
            scores = infer(model, image, mode=mode, crop=crop, stride=stride)
            if scores.shape[-2:] != label.shape:
                scores = F.interpolate(scores, size=label.shape, mode="bilinear", align_corners=False)
            cm += confusion_matrix(scores.argmax(1), label, model.num_classes, data.manifest.ignore_index)
        metrics = iou_from_confusion(cm)
        per_class = zip(classes, metrics["IoU"], metrics["Acc"], strict=True)
        results["datasets"][data.manifest.dataset] = {
            "mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"], "images": len(data),
            "per_class": {c: {"IoU": iou, "Acc": acc} for c, iou, acc in per_class},
        }  # fmt: skip
    values = [round(r["mIoU"], 2) for r in results["datasets"].values()]
    results["mean_mIoU"] = sum(values) / len(values)
    model.train(was_training)
    if out is not None:
        write_json(Path(out) / "results.json", _json_safe(results))
    return results


def _json_safe(value: Any) -> Any:
    """NaN -> None, recursively (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def format_table(results: dict[str, Any]) -> str:
    """Per-class IoU, one column per dataset, then mIoU / mAcc / aAcc rows."""
    names = list(results["datasets"])
    if not names:
        return ""
    classes = list(results["datasets"][names[0]]["per_class"])
    width = max(14, *(len(c) + 2 for c in classes))
    cols = [max(8, len(n) + 2) for n in names]

    def fmt(v: float | None) -> str:
        return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"

    lines = ["class".ljust(width) + "".join(n.rjust(w) for n, w in zip(names, cols, strict=True))]
    for c in classes:
        row = [fmt(results["datasets"][n]["per_class"].get(c, {}).get("IoU")) for n in names]
        lines.append(c.ljust(width) + "".join(v.rjust(w) for v, w in zip(row, cols, strict=True)))
    lines.append("-" * len(lines[0]))
    for key in ("mIoU", "mAcc", "aAcc"):
        lines.append(
            key.ljust(width) + "".join(fmt(results["datasets"][n][key]).rjust(w) for n, w in zip(names, cols, strict=True))
        )
    if len(names) > 1:
        lines.append(f"mean mIoU over {len(names)} datasets: {results['mean_mIoU']:.2f}")
    return "\n".join(lines)
