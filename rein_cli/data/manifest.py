"""The prepared-dataset manifest: the contract between data preparation and every loader and tool.

A prepared dataset is a folder with ``manifest.json``::

    {"format": 1, "dataset": "synthetic-fog", "version": "1", "tool_version": "0.1.0",
     "label_space": {"classes": [...], "palette": [[r, g, b], ...], "ignore_index": 255},
     "counts": {"val": 100}, "source": {...},
     "splits": {"val": [{"image": "images/val/000000.jpg", "label": "labels/val/000000.png"}, ...]}}

Paths are relative to the manifest's folder. The manifest is written last and atomically, so a folder
without one is never mistaken for a complete dataset.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rein_cli.errors import ReinError, did_you_mean
from rein_cli.io import write_json

FORMAT = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """A read and checked ``manifest.json``; ``counts`` are the pairs per split it declares."""

    path: Path
    dataset: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    ignore_index: int
    splits: dict[str, list[dict[str, str]]]
    counts: dict[str, int]

    @property
    def root(self) -> Path:
        return self.path.parent

    def samples(self, split: str) -> list[tuple[Path, Path | None]]:
        """(image, label) absolute paths of a split; label is None for unlabeled splits."""
        if split not in self.splits:
            raise ReinError(
                f'dataset {self.dataset} ({self.path}) has no split "{split}"{did_you_mean(split, self.splits)}; '
                f"its splits: {', '.join(self.splits)}"
            )
        root = self.root
        return [(root / s["image"], root / s["label"] if s.get("label") else None) for s in self.splits[split]]


def write_manifest(
    folder: Path,
    *,
    dataset: str,
    classes: Sequence[str],
    palette: Sequence[Sequence[int]],
    splits: dict[str, list[dict[str, str]]],
    ignore_index: int = 255,
    **extra: Any,
) -> Path:
    from rein_cli import __version__

    data = {
        "format": FORMAT,
        "dataset": dataset,
        "tool_version": __version__,
        **extra,
        "label_space": {"classes": list(classes), "palette": [list(c) for c in palette], "ignore_index": ignore_index},
        "counts": {name: len(items) for name, items in splits.items()},
        "splits": splits,
    }
    path = Path(folder) / MANIFEST
    write_json(path, data)
    return path


def read_manifest(path: Path) -> Manifest:
    """Read and check a manifest; a folder means its ``manifest.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise ReinError(f"no {MANIFEST} at {path}; give a prepared dataset folder or a known dataset name")
    try:
        data = json.loads(path.read_text())
        space = data["label_space"]
        classes = tuple(space["classes"])
        palette = tuple(tuple(int(v) for v in c) for c in space.get("palette", []))
        splits = data["splits"]
        if not isinstance(splits, dict) or not all(isinstance(v, list) for v in splits.values()):
            raise TypeError("splits must map split names to lists")
        for items in splits.values():
            for item in items:
                if "image" not in item:
                    raise KeyError("image")
        counts = {str(k): int(v) for k, v in data.get("counts", {}).items()}
        return Manifest(
            path, str(data["dataset"]), classes, palette, int(space.get("ignore_index", 255)), splits, counts
        )
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as err:
        raise ReinError(f"invalid manifest {path}: {type(err).__name__}: {err}; prepare the dataset again") from err


def image_folder(folder: Path, split: str) -> Manifest:
    """A plain folder of images (searched recursively) as an unlabeled dataset named after the folder, its images
    the one split ``split``; no classes (a model's own are used). Nothing is written."""
    from rein_cli.io import list_images, relative_path

    folder = Path(folder)
    items = [{"image": relative_path(image, folder)} for image in list_images(folder)]
    return Manifest(folder / MANIFEST, folder.resolve().name, (), (), 255, {split: items}, {split: len(items)})
