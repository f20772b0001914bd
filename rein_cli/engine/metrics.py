"""Segmentation metrics as pure functions: confusion matrix, per-class IoU and accuracy, mIoU, the DG mean."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping

import torch
from torch import Tensor


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """(K, K) int64 counts, rows = target class, columns = predicted class; ``ignore_index`` pixels skipped.

    Target values outside [0, K) other than ``ignore_index`` are skipped as well. Runs on the tensors' device.
    """
    pred, target = pred.flatten().long(), target.flatten().long()
    keep = labeled_pixels(target, num_classes, ignore_index)
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def labeled_pixels(target: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Where ``target`` names a class: neither ``ignore_index`` nor a value outside [0, K)."""
    return (target != ignore_index) & (target >= 0) & (target < num_classes)


def iou_from_confusion(cm: Tensor) -> dict[str, float | list[float]]:
    """Per-class IoU and accuracy (NaN where undefined) and their means, in percent.

    IoU_c = TP / (TP + FP + FN) over classes present in the prediction or the label (union > 0);
    Acc_c = TP / (TP + FN) over classes present in the label; aAcc = sum TP / labeled pixels.
    """
    cm = cm.double().cpu()
    tp = cm.diag()
    label_area, pred_area = cm.sum(1), cm.sum(0)
    union = label_area + pred_area - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))
    acc = torch.where(label_area > 0, tp / label_area.clamp(min=1), torch.full_like(tp, math.nan))
    total = float(label_area.sum())
    return {
        "mIoU": 100 * float(iou.nanmean()) if (union > 0).any() else math.nan,
        "mAcc": 100 * float(acc.nanmean()) if (label_area > 0).any() else math.nan,
        "aAcc": 100 * float(tp.sum()) / total if total else math.nan,
        "IoU": [100 * float(v) for v in iou],
        "Acc": [100 * float(v) for v in acc],
    }


def dg_mean(values: Mapping[str, float], excluded: Collection[str] = ()) -> tuple[float, list[str]]:
    """The domain-generalisation mean of the official evaluators and the datasets it is over.

    The plain mean of the per-dataset values **rounded to two decimals** (as they are printed), over the datasets
    not in ``excluded`` (the training datasets); over all of them when every dataset is excluded. NaN (a dataset
    without any labeled pixel) if any dataset that enters is NaN."""
    names = [name for name in values if name not in excluded] or list(values)
    if not names:
        return math.nan, []
    return sum(round(values[name], 2) for name in names) / len(names), names
