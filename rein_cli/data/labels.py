"""The 19 Cityscapes train-id classes and their palette: the label space every dataset is normalised to."""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)  # fmt: skip

TRAIN_ID = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}


def palette_lut(palette: tuple[tuple[int, int, int], ...] | list[list[int]]) -> np.ndarray:
    """A (256, 3) uint8 lookup table: class id -> colour; ids without a colour (and 255) are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut


def colorize(label: np.ndarray, palette: tuple[tuple[int, int, int], ...] | list[list[int]]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB."""
    return palette_lut(palette)[label]
