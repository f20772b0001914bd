"""Custom labeled datasets: a folder of images/ + masks/ with a classes.yaml, or a Hugging Face dataset
(``hf://org/name``), prepared into the same manifest as every other dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from rein_cli.data.manifest import MANIFEST, write_manifest
from rein_cli.errors import ReinError
from rein_cli.io import IMAGE_SUFFIXES, relative_path, save_image
from rein_cli.labels import default_palette
from rein_cli.progress import track

log = logging.getLogger(__name__)


def read_classes(path: Path) -> tuple[list[str], list[list[int]] | None, int]:
    """classes.yaml: ``classes`` (names, or {name, color} entries), optional ``colors`` and ``ignore_index``."""
    if not path.is_file():
        raise ReinError(f"{path} is missing; write the class names there, e.g. 'classes: [background, crack]'")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ReinError(f"{path} is not valid YAML: {err}") from err
    entries = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ReinError(f"{path} needs a non-empty list 'classes'")
    names = [e["name"] if isinstance(e, dict) else str(e) for e in entries]
    colors = data.get("colors") or (
        [e.get("color") for e in entries] if all(isinstance(e, dict) and "color" in e for e in entries) else None
    )
    if colors is not None and (
        len(colors) != len(names) or not all(isinstance(c, list) and len(c) == 3 for c in colors)
    ):
        raise ReinError(f"{path}: 'colors' must give one [r, g, b] per class ({len(names)})")
    ignore = int(data.get("ignore_index", 255))
    if len(names) > 255 or not 0 <= ignore <= 255 or ignore < len(names):
        raise ReinError(f"{path}: at most 255 classes, and ignore_index ({ignore}) must be >= the number of classes")
    return names, colors, ignore


def _pairs(folder: Path) -> dict[str, list[tuple[Path, Path]]]:
    """{split: [(image, mask)]}: from images/<split>/ and masks/<split>/ when present, else a 90/10 split by name."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise ReinError(f"{folder} needs images/ and masks/ folders (masks named like their images, as PNG)")
    subsets = [d.name for d in sorted(images_dir.iterdir()) if d.is_dir()]
    groups = {s: images_dir / s for s in subsets} if subsets else {"all": images_dir}
    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for split, directory in groups.items():
        images = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        items = []
        for image in images:
            rel = image.relative_to(images_dir).with_suffix(".png")
            mask = masks_dir / rel
            if not mask.is_file():
                raise ReinError(f"image {image} has no mask {mask}; masks are PNGs with the image's name")
            items.append((image, mask))
        if not items:
            raise ReinError(f"no images in {directory}")
        pairs[split] = items
    if list(pairs) == ["all"]:
        items = pairs.pop("all")
        pairs = {
            "train": [p for i, p in enumerate(items) if i % 10 != 9],
            "val": [p for i, p in enumerate(items) if i % 10 == 9],
        }
        if not pairs["val"]:
            pairs["val"] = pairs["train"][-1:]
            pairs["train"] = pairs["train"][:-1] or pairs["val"]
    return pairs


def prepare_custom(source: Path | str, name: str, out: Path, *, progress: bool = True) -> Path:
    """Check and convert a custom folder; returns the manifest. Index masks are used in place; colour masks
    are mapped to indices through the classes.yaml colours and written to labels/."""
    if isinstance(source, str) and source.startswith("hf://"):
        return prepare_hf(source[5:], name, Path(out), progress=progress)
    source, out = Path(source), Path(out)
    names, colors, ignore = read_classes(source / "classes.yaml")
    (out / MANIFEST).unlink(missing_ok=True)
    splits = {}
    for split, items in _pairs(source).items():
        entries = []
        for image, mask in track(items, desc=f"checking {split}", unit="pair", bar=progress):
            size = Image.open(image).size
            with Image.open(mask) as m:
                if m.size != size:
                    raise ReinError(f"mask {mask} is {m.size[0]}x{m.size[1]} but {image} is {size[0]}x{size[1]}")
                label = np.asarray(m.convert("RGB")) if m.mode in ("RGB", "RGBA") else np.asarray(m)
            target = mask
            if label.ndim == 3:
                if colors is None:
                    raise ReinError(
                        f"mask {mask} is a colour image; give each class a colour in classes.yaml ('colors')"
                    )
                label = _colors_to_indices(label, colors, mask)
                target = out / "labels" / split / mask.relative_to(source / "masks").with_suffix(".png")
                save_image(target, label)
            bad = sorted(int(v) for v in np.unique(label) if v >= len(names) and v != ignore)
            if bad:
                raise ReinError(
                    f"mask {mask} holds values {bad[:8]}, but there are {len(names)} classes (ignore {ignore})"
                )
            entries.append({"image": relative_path(image, out), "label": relative_path(target, out)})
        splits[split] = entries
    space = {"classes": names, "palette": colors or default_palette(len(names)), "ignore_index": ignore}
    origin = {"folder": str(source.resolve())}
    return write_manifest(
        out, dataset=name, splits=splits, version="1", source=origin, converted="custom masks", **space
    )


def _colors_to_indices(rgb: np.ndarray, colors: list[list[int]], path: Path) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int64)
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
    found = keys[order][pos] == code
    if not found.all():
        unknown = sorted({tuple(int(c) for c in rgb[i]) for i in zip(*np.nonzero(~found), strict=True)})[:5]
        raise ReinError(f"mask {path} has colours that are no class in classes.yaml: {unknown}")
    return order[pos].astype(np.uint8)


def prepare_hf(repo: str, name: str, out: Path, *, progress: bool = True) -> Path:
    """A Hugging Face dataset with an image column and a mask column, written out as files + manifest."""
    try:
        import datasets
    except ImportError as err:
        raise ReinError("hf:// datasets need the `datasets` library: pip install 'rein-cli[hf]'") from err
    data = datasets.load_dataset(repo)
    (out / MANIFEST).unlink(missing_ok=True)
    splits, max_id = {}, 0
    for split, rows in data.items():
        columns = list(rows.features) if hasattr(rows, "features") else list(rows[0])
        mask_col = next((c for c in ("label", "mask", "annotation", "segmentation", "semantic") if c in columns), None)
        if "image" not in columns or mask_col is None:
            raise ReinError(
                f"{repo} ({split}) needs an 'image' column and a mask column (label/mask/annotation); has {columns}"
            )
        entries = []
        for i, row in enumerate(rows):
            image = row["image"].convert("RGB")
            mask = np.asarray(row[mask_col])
            if mask.ndim != 2 or mask.shape != (image.height, image.width):
                raise ReinError(f"{repo} {split} row {i}: the mask is not a single-channel map of the image's size")
            max_id = max(max_id, int(mask[mask != 255].max(initial=0)))
            save_image(out / "images" / split / f"{i:06d}.png", np.asarray(image))
            save_image(out / "labels" / split / f"{i:06d}.png", mask.astype(np.uint8))
            entries.append({"image": f"images/{split}/{i:06d}.png", "label": f"labels/{split}/{i:06d}.png"})
        splits["val" if split == "validation" else split] = entries
    names = [f"class_{i}" for i in range(max_id + 1)]
    log.info("%s: %d classes found; name them by editing %s", repo, len(names), out / MANIFEST)
    space = {"classes": names, "palette": default_palette(len(names))}
    origin, converted = {"hub": repo}, "Hugging Face dataset -> files"
    return write_manifest(out, dataset=name, splits=splits, version="1", source=origin, converted=converted, **space)
