"""The pictures of a dataset's worst images (lowest mIoU of their own), for the shift report: the image, its label,
the prediction and an error map, each at most `WIDTH` pixels wide, under ``OUT/gallery/<dataset>/``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rein_cli.data.dataset import SegmentationDataset
from rein_cli.data.manifest import Manifest
from rein_cli.engine.imagestats import ImageStats
from rein_cli.engine.results import ImageCase
from rein_cli.io import save_image
from rein_cli.labels import colorize

GALLERY = "gallery"  # the pictures' folder in an evaluation's output
WORST = 8  # images shown per dataset
WIDTH = 640
WRONG = (230, 40, 40)  # a wrongly predicted pixel in the error map
UNLABELED = (0, 0, 0)


def error_map(image: np.ndarray, pred: np.ndarray, label: np.ndarray, ignore_index: int) -> np.ndarray:
    """(H, W, 3): the image in dim grey where the prediction is right, `WRONG` where it is wrong, `UNLABELED` where
    the label has no class."""
    grey = (0.3 * image.astype(np.float32).mean(axis=2) + 40).astype(np.uint8)
    out = np.repeat(grey[..., None], 3, axis=2)
    out[(pred != label) & (label != ignore_index)] = WRONG
    out[label == ignore_index] = UNLABELED
    return out


def _shrink(array: np.ndarray, nearest: bool) -> np.ndarray:
    h, w = array.shape[:2]
    if w <= WIDTH:
        return array
    size = (WIDTH, max(1, round(h * WIDTH / w)))
    return np.asarray(Image.fromarray(array).resize(size, Image.NEAREST if nearest else Image.BILINEAR))


def write_gallery(stats: ImageStats, manifest: Manifest, split: str, folder: Path, out: Path) -> tuple[ImageCase, ...]:
    """The pictures of ``stats.worst`` (mIoU, index into the split, prediction) under ``out/folder``; the cases,
    worst first, with their files relative to ``out``."""
    data = SegmentationDataset(manifest, split)
    miou, aacc = stats.image_miou(), stats.image_aacc()
    position = {path: i for i, path in enumerate(stats.images)}
    root = manifest.root
    cases = []
    for rank, (_, index, pred) in enumerate(stats.worst):
        item = data[index]
        image, label = item["image"].numpy(), item["label"].numpy()
        rel = Path(item["path"]).relative_to(root).as_posix()
        stem = f"{rank:02d}-{Path(rel).stem}"
        pictures = {
            "image": (image, False, ".jpg"),
            "label": (colorize(label, manifest.palette), True, ".png"),
            "prediction": (colorize(pred, manifest.palette), True, ".png"),
            "errors": (error_map(image, pred, label, manifest.ignore_index), True, ".png"),
        }
        files = {}
        for kind, (array, nearest, suffix) in pictures.items():
            name = Path(folder) / f"{stem}-{kind}{suffix}"
            save_image(out / name, _shrink(array, nearest), quality=90)
            files[kind] = name.as_posix()
        i = position[rel]
        cases.append(ImageCase(rel, float(miou[i]), float(aacc[i]), files))
    return tuple(cases)
