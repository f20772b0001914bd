"""Custom labeled datasets: a folder of images/ + masks/ with a classes.yaml, or a Hugging Face dataset
(``hf://org/name``), prepared into the same manifest as every other dataset."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import yaml

from rein_cli.data.manifest import MANIFEST, write_manifest
from rein_cli.data.pairs import check_size, unknown_values
from rein_cli.documents import load_yaml
from rein_cli.errors import ReinError, did_you_mean
from rein_cli.io import IMAGE_SUFFIXES, check_image, read_image, read_label, relative_path, save_image
from rein_cli.labels import default_palette
from rein_cli.progress import track

log = logging.getLogger(__name__)

_KEYS = ("classes", "colors", "ignore_index")  # of classes.yaml


def read_classes(path: Path) -> tuple[list[str], list[list[int]] | None, int]:
    """classes.yaml: ``classes`` (each a name, or ``{name, color}``), optional ``colors`` (one [r, g, b] per class)
    and ``ignore_index`` (default 255). Returns (names, colours or None, ignore index); every problem is an error
    that names the file and the entry."""
    if not path.is_file():
        raise ReinError(f"{path} is missing; write the class names there, e.g. 'classes: [background, crack]'")
    try:
        data = load_yaml(path.read_text(), str(path)) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ReinError(f"{path} is not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ReinError(f"{path} must be a mapping with 'classes', e.g. 'classes: [background, crack]'")
    for key in data:
        if key not in _KEYS:
            raise ReinError(f'{path}: unknown key "{key}"{did_you_mean(str(key), _KEYS)}; known: {", ".join(_KEYS)}')
    entries = data.get("classes")
    if not isinstance(entries, list) or not entries:
        raise ReinError(f"{path} needs a non-empty list 'classes', e.g. 'classes: [background, crack]'")
    names, own_colors = [], []
    for i, entry in enumerate(entries):
        name, color = _class_entry(path, i, entry)
        if name in names:
            raise ReinError(f"{path}: classes[{i}] repeats the name {name!r} of classes[{names.index(name)}]")
        names.append(name)
        own_colors.append(color)
    colors = data.get("colors")
    if colors is not None:
        if any(c is not None for c in own_colors):
            raise ReinError(f"{path}: colours are given both in 'colors' and in 'classes'; keep one of them")
        if not isinstance(colors, list) or len(colors) != len(names):
            raise ReinError(f"{path}: 'colors' must give one [r, g, b] per class ({len(names)} classes)")
        colors = [_color(path, f"colors[{i}] ({names[i]})", c) for i, c in enumerate(colors)]
    elif None not in own_colors:
        colors = own_colors
    elif any(c is not None for c in own_colors):
        missing = own_colors.index(None)
        raise ReinError(f"{path}: classes[{missing}] ({names[missing]}) has no color; give every class one, or none")
    if colors is not None and len({tuple(c) for c in colors}) != len(colors):
        raise ReinError(f"{path}: two classes have the same colour; each class needs its own")
    ignore = data.get("ignore_index", 255)
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not 0 <= ignore <= 255:
        raise ReinError(f"{path}: ignore_index must be an integer from 0 to 255 (got {ignore!r}); 255 is the usual")
    if len(names) > 255 or ignore < len(names):
        raise ReinError(
            f"{path}: at most 255 classes, and ignore_index ({ignore}) must be >= the number of classes ({len(names)})"
        )
    return names, colors, ignore


def _class_entry(path: Path, index: int, entry: object) -> tuple[str, list[int] | None]:
    """(name, colour or None) of ``classes[index]``: a name, or a mapping with ``name`` and optional ``color``."""
    where = f"{path}: classes[{index}]"
    color = None
    if isinstance(entry, dict):
        for key in entry:
            if key not in ("name", "color"):
                raise ReinError(f'{where} has an unknown key "{key}"{did_you_mean(str(key), ("name", "color"))}')
        if "color" in entry:
            color = _color(path, f"classes[{index}] color", entry["color"])
        entry = entry.get("name")
    if isinstance(entry, bool) or not isinstance(entry, str | int | float) or not str(entry).strip():
        raise ReinError(f"{where} ({entry!r}) needs a name: write '- NAME' or '- {{name: NAME, color: [r, g, b]}}'")
    return str(entry).strip(), color


def _color(path: Path, where: str, value: object) -> list[int]:
    """[r, g, b]: three integers from 0 to 255."""
    if not (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        raise ReinError(f"{path}: {where} is {value!r}; a colour is three integers from 0 to 255, e.g. [255, 0, 0]")
    return [int(v) for v in value]


def _pairs(folder: Path) -> dict[str, list[tuple[Path, Path]]]:
    """{split: [(image, mask)]}: from images/<split>/ and masks/<split>/ when present, else a 90/10 split by name."""
    images_dir, masks_dir = folder / "images", folder / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise ReinError(f"{folder} needs images/ and masks/ folders (masks named like their images, as PNG)")
    subsets = [d.name for d in sorted(images_dir.iterdir()) if d.is_dir()]
    groups = {s: images_dir / s for s in subsets} if subsets else {"all": images_dir}
    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for split, directory in groups.items():
        images = sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
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
    """Check and convert a custom folder; returns the manifest. When classes.yaml gives colours, every mask is read
    by colour (palette PNGs included) and its class indices are written to labels/; otherwise masks are index maps
    (L, P or 1-bit PNGs), used in place. Images and masks are decoded in full (`rein_cli.io`)."""
    if isinstance(source, str) and source.startswith("hf://"):
        return prepare_hf(source[5:], name, Path(out), progress=progress)
    source, out = Path(source), Path(out)
    names, colors, ignore = read_classes(source / "classes.yaml")
    pairs = _pairs(source)  # every image has its mask: checked before anything is written
    staging = out / ".labels.new"  # colour masks: their class indices are built here, then moved to labels/
    shutil.rmtree(staging, ignore_errors=True)
    try:
        splits = _check_pairs(pairs, source, out, staging, names, colors, ignore, progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if colors is not None:  # every mask checked and converted: the new labels replace the old ones
        (out / MANIFEST).unlink(missing_ok=True)  # the old manifest names the labels being replaced
        old = out / ".labels.old"
        shutil.rmtree(old, ignore_errors=True)
        if (out / "labels").exists():
            os.replace(out / "labels", old)
        os.replace(staging, out / "labels")
        shutil.rmtree(old, ignore_errors=True)
    space = {"classes": names, "palette": colors or default_palette(len(names)), "ignore_index": ignore}
    origin = {"folder": str(source.resolve())}
    return write_manifest(
        out, dataset=name, splits=splits, version="1", source=origin, converted="custom masks", **space
    )


def _check_pairs(
    pairs: dict[str, list[tuple[Path, Path]]],
    source: Path,
    out: Path,
    staging: Path,
    names: list[str],
    colors: list[list[int]] | None,
    ignore: int,
    progress: bool,
) -> dict[str, list[dict]]:
    """Every pair decoded and checked; colour masks converted to class indices under ``staging``. The manifest's
    splits, with the labels at their final place (``out/labels``)."""
    splits = {}
    for split, items in pairs.items():
        entries = []
        for image_path, mask in track(items, desc=f"checking {split}", unit="pair", bar=progress):
            width, height = check_image(image_path)
            image_shape = (height, width)
            target = mask
            if colors is not None:  # by colour, whatever the PNG's mode (a palette PNG gives its palette's colours)
                label = read_image(mask)
                check_size(image_path, image_shape, mask, label)
                label = _colors_to_indices(label, colors, mask)
                target = out / "labels" / split / mask.relative_to(source / "masks").with_suffix(".png")
                written = staging / target.relative_to(out / "labels")
            else:
                label = read_label(mask)  # a colour mask is refused here, with the hint to give colours
                check_size(image_path, image_shape, mask, label)
            bad = unknown_values(label, len(names), ignore)
            if bad:
                raise ReinError(
                    f"mask {mask} holds values {bad[:8]}, but there are {len(names)} classes (ignore {ignore})"
                )
            if target != mask:
                save_image(written, label)
            entries.append({"image": relative_path(image_path, out), "label": relative_path(target, out)})
        splits[split] = entries
    return splits


def _colors_to_indices(rgb: np.ndarray, colors: list[list[int]], path: Path) -> np.ndarray:
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    keys = np.array([(r << 16) | (g << 8) | b for r, g, b in colors], dtype=np.int64)
    order = np.argsort(keys)
    pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
    found = keys[order][pos] == code
    if not found.all():
        unknown = sorted({tuple(int(c) for c in rgb[i]) for i in zip(*np.nonzero(~found), strict=True)})[:5]
        raise ReinError(
            f"mask {path} has colours that are no class in classes.yaml: {unknown}; masks are read by colour "
            "because classes.yaml gives colours (leave them out for masks of class indices)"
        )
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
