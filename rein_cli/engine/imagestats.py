"""What an evaluation records per image, beside results.json: each image's per-class intersection, label and
prediction areas (the confusion matrix's diagonal and margins, so any subset of images gives the exact mIoU of that
subset) and its mean confidence; per dataset, histograms of the per-pixel confidence by predicted class (for the
label-free estimates of `rein_cli.engine.estimate`).

Confidence is read from the class probabilities of a pixel: a softmax of a linear head's logits, or a Mask2Former
head's per-class scores (sums over queries of class probability times mask probability) divided by their sum.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from rein_cli.engine.metrics import labeled_pixels
from rein_cli.errors import ReinError
from rein_cli.io import atomic_path

IMAGES_FILE = "images.npz"
BINS = 1000  # confidence histogram bins over [0, 1]
SCORES = ("max_prob", "neg_entropy")  # the maximum class probability; 1 - entropy / log K


def class_probabilities(scores: Tensor, scores_are: str) -> Tensor:
    """(B, K, H, W) class probabilities from a head's ``semantic_scores`` (``scores_are``: its kind)."""
    if scores_are == "logits":
        return scores.float().softmax(1)
    if scores_are == "masks":
        scores = scores.float().clamp(min=0)
        return scores / scores.sum(1, keepdim=True).clamp(min=1e-12)
    return scores.float()


def confidence_scores(probs: Tensor) -> dict[str, Tensor]:
    """Per pixel (B, H, W): ``max_prob`` and ``neg_entropy`` (1 - H / log K), both in [0, 1]."""
    K = probs.shape[1]
    entropy = torch.special.entr(probs).sum(1)  # -p log p, 0 where p = 0
    return {"max_prob": probs.amax(1), "neg_entropy": (1 - entropy / math.log(K)).clamp(0, 1)}


@dataclass
class ImageStats:
    """One dataset's images (N of them, K classes): ``images`` their paths relative to the dataset's folder;
    ``intersect``, ``label_area`` and ``pred_area`` (N, K) pixel counts over the labeled pixels (zero without
    labels, where ``pred_area`` counts every pixel); ``confidence`` (N,) each image's mean maximum class probability;
    ``hist`` per score (`SCORES`) a (K, `BINS`) histogram of every pixel's score by predicted class, and
    ``hist_labeled`` the same over the labeled pixels only (what a calibration uses); ``split``: whose images."""

    images: list[str]
    intersect: np.ndarray
    label_area: np.ndarray
    pred_area: np.ndarray
    confidence: np.ndarray
    hist: dict[str, np.ndarray]
    hist_labeled: dict[str, np.ndarray]
    labeled: bool
    split: str = "val"
    worst: list[tuple[float, int, np.ndarray]] = field(default_factory=list, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.images)

    def image_miou(self) -> np.ndarray:
        """(N,) each image's own mIoU in percent, over the classes in its label or prediction (NaN: none)."""
        return _miou(self.intersect, self.label_area, self.pred_area)

    def image_aacc(self) -> np.ndarray:
        """(N,) each image's pixel accuracy in percent (NaN: no labeled pixel)."""
        labeled = self.label_area.sum(1)
        return np.divide(100 * self.intersect.sum(1), labeled, out=np.full(len(labeled), np.nan), where=labeled > 0)


def _miou(intersect: np.ndarray, label: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """mIoU in percent along the last axis (classes), the classes with a union only; NaN where none has one."""
    union = label + pred - intersect
    present = union > 0
    iou = np.divide(intersect, union, out=np.zeros(union.shape), where=present)
    count = present.sum(-1)
    return np.divide(100 * iou.sum(-1), count, out=np.full(count.shape, np.nan), where=count > 0)


class Recorder:
    """Collects one dataset's `ImageStats` while it is scored, image by image (a process's share of them), and
    keeps the ``keep_worst`` images of lowest mIoU with their predictions."""

    def __init__(
        self, num_classes: int, size: int, paths: list[str], *, labeled: bool, split: str, keep_worst: int = 0
    ):
        K = num_classes
        self.paths, self.labeled, self.split, self.keep_worst = paths, labeled, split, keep_worst
        self.seen = np.zeros(size, dtype=bool)
        self.areas = np.zeros((3, size, K), dtype=np.int64)
        self.confidence = np.full(size, np.nan)
        self.hist = {s: torch.zeros(K * BINS, dtype=torch.float64) for s in SCORES}
        self.hist_labeled = {s: torch.zeros(K * BINS, dtype=torch.float64) for s in SCORES}
        self.worst: list[tuple[float, int, np.ndarray]] = []

    def add(
        self, index: int, probs: Tensor, pred: Tensor, label: Tensor | None, confusion: Tensor | None, ignore_index: int
    ) -> None:
        """Image ``index``: its (1, K, H, W) probabilities, (H, W) prediction, and its label and (K, K) confusion
        matrix (`rein_cli.engine.metrics.confusion_matrix`; both None: unlabeled)."""
        K = probs.shape[1]
        scores = confidence_scores(probs)
        valid = labeled_pixels(label.long(), K, ignore_index) if label is not None else None
        for name, score in scores.items():
            bins = (score[0] * BINS).long().clamp(0, BINS - 1) + pred * BINS
            self.hist[name] += torch.bincount(bins.flatten(), minlength=K * BINS).double().cpu()
            if valid is not None:
                self.hist_labeled[name] += torch.bincount(bins[valid], minlength=K * BINS).double().cpu()
        self.confidence[index] = float(scores["max_prob"].double().mean())
        self.seen[index] = True
        if confusion is None:
            self.areas[2, index] = torch.bincount(pred.flatten(), minlength=K).cpu().numpy()
            return
        confusion = confusion.cpu()  # the matrix's diagonal and margins: intersection, label and prediction areas
        self.areas[:, index] = torch.stack([confusion.diag(), confusion.sum(1), confusion.sum(0)]).numpy()
        if self.keep_worst:
            miou = float(_miou(*self.areas[:, index]))
            if not math.isnan(miou):
                self.worst.append((miou, index, pred.to(torch.uint8).cpu().numpy()))
                self.worst = sorted(self.worst, key=lambda w: (w[0], w[1]))[: self.keep_worst]

    def finish(self, gathered: list[Recorder] | None = None) -> ImageStats:
        """The dataset's statistics, with the shares of ``gathered`` (every process's recorder, this one among
        them) put together."""
        parts = gathered or [self]
        seen = np.zeros_like(self.seen)
        areas = np.zeros_like(self.areas)
        confidence = np.full_like(self.confidence, np.nan)
        for part in parts:
            areas[:, part.seen] = part.areas[:, part.seen]
            confidence[part.seen] = part.confidence[part.seen]
            seen |= part.seen
        K = self.areas.shape[2]
        hist = {s: sum(p.hist[s] for p in parts).numpy().reshape(K, BINS) for s in SCORES}
        hist_labeled = {s: sum(p.hist_labeled[s] for p in parts).numpy().reshape(K, BINS) for s in SCORES}
        worst = sorted((w for p in parts for w in p.worst), key=lambda w: (w[0], w[1]))[: self.keep_worst]
        return ImageStats(
            [path for path, s in zip(self.paths, seen, strict=True) if s],
            areas[0][seen],
            areas[1][seen],
            areas[2][seen],
            confidence[seen],
            hist,
            hist_labeled if self.labeled else {},
            self.labeled,
            self.split,
            worst,
        )


def write_image_stats(stats: Mapping[str, ImageStats], out: Path) -> Path:
    """``out/images.npz`` (compressed), written atomically: every dataset's `ImageStats` under its key."""
    arrays: dict[str, np.ndarray] = {}
    index = []
    for i, (key, s) in enumerate(stats.items()):
        index.append({"key": key, "labeled": s.labeled, "split": s.split, "images": s.images})
        arrays |= {f"{i}.intersect": s.intersect, f"{i}.label_area": s.label_area, f"{i}.pred_area": s.pred_area}
        arrays[f"{i}.confidence"] = s.confidence
        arrays |= {f"{i}.hist.{name}": h.astype(np.int64) for name, h in s.hist.items()}
        arrays |= {f"{i}.hist_labeled.{name}": h.astype(np.int64) for name, h in s.hist_labeled.items()}
    arrays["index"] = np.array(json.dumps(index))
    path = Path(out) / IMAGES_FILE
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def read_image_stats(file: Path) -> dict[str, ImageStats]:
    """The per-image statistics an evaluation wrote (`write_image_stats`), by dataset key."""
    try:
        with np.load(file, allow_pickle=False) as data:
            index = json.loads(str(data["index"]))
            stats = {}
            for i, entry in enumerate(index):
                hist = {n: data[f"{i}.hist.{n}"].astype(np.float64) for n in SCORES if f"{i}.hist.{n}" in data}
                labeled = {
                    n: data[f"{i}.hist_labeled.{n}"].astype(np.float64)
                    for n in SCORES
                    if f"{i}.hist_labeled.{n}" in data
                }
                stats[entry["key"]] = ImageStats(
                    list(entry["images"]),
                    data[f"{i}.intersect"],
                    data[f"{i}.label_area"],
                    data[f"{i}.pred_area"],
                    data[f"{i}.confidence"],
                    hist,
                    labeled,
                    bool(entry["labeled"]),
                    str(entry.get("split", "val")),
                )
    except FileNotFoundError as err:
        raise ReinError(f"{file} is missing: evaluate again with rein eval --out to record each image") from err
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise ReinError(f"{file} is damaged ({type(err).__name__}: {err}); evaluate again with rein eval") from err
    return stats
