"""The label space: the 19 Cityscapes train-id classes, palettes, and the label formats with their lookup tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

IGNORE_INDEX = 255

# The 19 Cityscapes train-id classes, in train-id order (road = 0 ... bicycle = 18), and their colours.
CITYSCAPES_COLORS: dict[str, tuple[int, int, int]] = {
    "road": (128, 64, 128),
    "sidewalk": (244, 35, 232),
    "building": (70, 70, 70),
    "wall": (102, 102, 156),
    "fence": (190, 153, 153),
    "pole": (153, 153, 153),
    "traffic light": (250, 170, 30),
    "traffic sign": (220, 220, 0),
    "vegetation": (107, 142, 35),
    "terrain": (152, 251, 152),
    "sky": (70, 130, 180),
    "person": (220, 20, 60),
    "rider": (255, 0, 0),
    "car": (0, 0, 142),
    "truck": (0, 0, 70),
    "bus": (0, 60, 100),
    "train": (0, 80, 100),
    "motorcycle": (0, 0, 230),
    "bicycle": (119, 11, 32),
}
CITYSCAPES_CLASSES: tuple[str, ...] = tuple(CITYSCAPES_COLORS)
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(CITYSCAPES_COLORS.values())
TRAIN_ID = {name: i for i, name in enumerate(CITYSCAPES_CLASSES)}


def default_classes(num_classes: int) -> tuple[str, ...]:
    """Class names for a model or dataset that brings none: the Cityscapes classes for 19, else class_0, class_1, ..."""
    if num_classes == len(CITYSCAPES_CLASSES):
        return CITYSCAPES_CLASSES
    return tuple(f"class_{i}" for i in range(num_classes))


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


def lookup_table(sources: tuple, size: int = 256) -> np.ndarray:
    """A (size,) uint8 table from source ids to train ids: ``sources[t]`` is the source id (or a tuple of ids, or
    None) of train id ``t``; every other id maps to 255 (ignore)."""
    table = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for train_id, ids in enumerate(sources):
        for source in ids if isinstance(ids, tuple) else () if ids is None else (ids,):
            table[source] = train_id
    return table


# The source id(s) of each train id, in train-id order. GTA5 labels use the Cityscapes ids.
CITYSCAPES_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
SYNTHIA_IDS = (3, 4, 2, 21, 5, 7, 15, 9, 6, None, 1, 10, 17, 8, None, 19, None, 12, 11)  # no terrain, truck, train
# Mapillary Vistas v1.2 ids (0-65), by the official converter's rules applied to the v1.2 class names.
MAPILLARY_V12_IDS = (
    (7, 8, 10, 13, 14, 23, 24),  # road: bike lane, crosswalk, parking, road, service lane, lane markings
    (2, 9, 11, 15),  # sidewalk: curb, curb cut, pedestrian area, sidewalk
    17,  # building
    6,  # wall
    3,  # fence
    (44, 45, 47),  # pole: street light, pole, utility pole
    48,  # traffic light
    (46, 49, 50),  # traffic sign: frame, back, front
    30,  # vegetation
    29,  # terrain
    27,  # sky
    19,  # person
    (20, 21, 22),  # rider: bicyclist, motorcyclist, other rider
    55,  # car
    61,  # truck
    54,  # bus
    58,  # train: on rails
    57,  # motorcycle
    52,  # bicycle
)

LabelFormatName = Literal["train-ids", "cityscapes-ids", "mapillary-v1.2", "synthia"]


@dataclass(frozen=True)
class LabelFormat:
    """How a dataset's label files encode classes: the ids that exist, the table to train ids (None: already
    train ids, values only checked) and the bits per id in the files (16: SYNTHIA's 16-bit PNGs)."""

    description: str
    known_ids: frozenset[int]
    table: np.ndarray | None = None
    bits: int = 8


LABEL_FORMATS: dict[str, LabelFormat] = {
    "cityscapes-ids": LabelFormat(
        "Cityscapes label ids -> train ids", frozenset(range(34)), lookup_table(CITYSCAPES_IDS)
    ),
    "mapillary-v1.2": LabelFormat(
        "Mapillary v1.2 ids -> train ids", frozenset(range(66)), lookup_table(MAPILLARY_V12_IDS)
    ),
    "synthia": LabelFormat(
        "SYNTHIA ids (16-bit) -> train ids", frozenset(range(23)), lookup_table(SYNTHIA_IDS, 1 << 16), bits=16
    ),
    "train-ids": LabelFormat("none: already train ids (values checked)", frozenset(range(19))),
}
