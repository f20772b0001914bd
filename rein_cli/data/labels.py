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


def default_palette(num_classes: int) -> list[list[int]]:
    """Distinct colours for a class list that brings none (the Cityscapes palette for the 19 train ids)."""
    if num_classes == len(CITYSCAPES_PALETTE):
        return [list(c) for c in CITYSCAPES_PALETTE]
    return [[(37 * i) % 256, (91 * i + 40) % 256, (53 * i + 80) % 256] for i in range(num_classes)]


def palette_lut(palette: tuple[tuple[int, int, int], ...] | list[list[int]]) -> np.ndarray:
    """A (256, 3) uint8 lookup table: class id -> colour; ids without a colour (and 255) are black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut


def colorize(label: np.ndarray, palette: tuple[tuple[int, int, int], ...] | list[list[int]]) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) RGB."""
    return palette_lut(palette)[label]


# Cityscapes label ids (0-33) -> train ids; GTA5 labels use the same ids. Everything else is ignored.
CITYSCAPES_ID_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                          26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip

# SYNTHIA class ids -> Cityscapes train ids (16 classes: no terrain, truck or train).
SYNTHIA_TO_TRAIN = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13, 19: 15,
                    12: 17, 11: 18}  # fmt: skip

# Mapillary Vistas v1.2 ids (0-65) -> train ids, by the official converter's rules applied to the v1.2 names.
MAPILLARY_V12_TO_TRAIN = (
    255, 255, 1, 4, 255, 255, 3, 0, 0, 1, 0, 1, 255, 0, 0, 1, 255, 2, 255, 11, 12, 12, 12, 0, 0, 255, 255, 10, 255, 9, 8,
    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 5, 5, 7, 5, 6, 7, 7, 255, 18, 255, 15, 13, 255, 17,
    16, 255, 255, 14, 255, 255, 255, 255,
)  # fmt: skip


def lut(mapping: dict[int, int] | tuple[int, ...], size: int = 256) -> np.ndarray:
    """A lookup table: every id not in ``mapping`` maps to 255 (ignore)."""
    table = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    items = mapping.items() if isinstance(mapping, dict) else enumerate(mapping)
    for source, target in items:
        table[source] = target
    return table


def mapillary_train_id(readable_name: str) -> int:
    """The official converter's rule for one Mapillary class name (e.g. "Lane Marking - Crosswalk" -> road)."""
    name = readable_name.lower().replace(" ", "").replace("-", "")
    if name in {c.replace(" ", "") for c in CITYSCAPES_CLASSES}:
        return next(i for i, c in enumerate(CITYSCAPES_CLASSES) if c.replace(" ", "") == name)
    rules = [
        (("trafficsign", "front", "back"), "traffic sign"), (("onrail",), "train"), (("cyclist", "rider"), "rider"),
        (("pole", "streetlight"), "pole"), (("curb", "pedestrianarea"), "sidewalk"),
        (("crosswalkplain", "parking", "bikelane", "servicelane", "lanemarking"), "road"),
    ]  # fmt: skip
    for keys, target in rules:
        if any(key in name for key in keys):
            return TRAIN_ID[target]
    return IGNORE_INDEX
