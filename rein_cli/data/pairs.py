"""The one check of an image/label pair, shared by `prepare`, `verify` and the datasets that training reads.

Both files are decoded in full by the safe readers of `rein_cli.io` (file, size limit, mode), the label must have
its image's size, and its values must be class ids of the label set or the ignore index. Every problem is a
`ReinError` that names the file.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import numpy as np

from rein_cli.errors import ReinError
from rein_cli.io import read_image, read_label


def unknown_values(label: np.ndarray, known: int | Collection[int], ignore_index: int) -> list[int]:
    """The sorted values of ``label`` that are neither class ids (``range(known)``, or the ids in ``known``) nor
    ``ignore_index``."""
    present = np.flatnonzero(np.bincount(label.ravel())) if label.size else np.zeros(0, dtype=np.int64)
    ids = range(known) if isinstance(known, int) else known
    return [int(v) for v in present if int(v) not in ids and int(v) != ignore_index]


def check_size(image_path: Path, image_shape: tuple[int, ...], label_path: Path, label: np.ndarray) -> None:
    """A label map must have its image's size; ``image_shape`` is (H, W, ...)."""
    if label.shape[:2] != tuple(image_shape[:2]):
        raise ReinError(
            f"label {label_path} is {label.shape[1]}x{label.shape[0]} but its image {image_path} is "
            f"{image_shape[1]}x{image_shape[0]}; replace the pair"
        )


def read_pair(
    image_path: Path, label_path: Path | None, *, num_classes: int, ignore_index: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """A prepared pair as ((H, W, 3) uint8 RGB, (H, W) uint8 ids or None without a label), after every check."""
    image = read_image(image_path)
    if label_path is None:
        return image, None
    label = read_label(label_path)
    check_size(image_path, image.shape, label_path, label)
    unknown = unknown_values(label, num_classes, ignore_index)
    if unknown:
        raise ReinError(
            f"label {label_path} holds values {unknown[:8]} that are no class id (0-{num_classes - 1}) nor the "
            f"ignore index {ignore_index}; fix the file or prepare the dataset again"
        )
    return image, label
