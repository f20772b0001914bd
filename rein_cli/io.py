"""Reading images and labels with clear errors, and writing files atomically (temp file, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from rein_cli.errors import ReinError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def umask() -> int:
    """The process's file-creation mask (read without changing it for long)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``, on failure removed."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise ReinError(f"cannot write {path}: {err.strerror}; choose a writable location") from err
    os.close(fd)
    os.chmod(tmp, 0o666 & ~umask())  # mkstemp creates 0600; give the file the usual permissions
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: Path, option: str = "--out") -> None:
    """Fail now, not after hours of work, when ``folder`` cannot be created or written to."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".rein-write-test-"):
            pass
    except OSError as err:
        raise ReinError(f"cannot write to {folder}: {err.strerror}; choose a writable {option}") from err


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def save_image(path: Path, array: np.ndarray, *, palette: np.ndarray | None = None, compress_level: int = 6) -> None:
    """Save an (H, W, 3) RGB or (H, W) uint8 array; a (K, 3) ``palette`` makes a palette PNG from an index map."""
    image = Image.fromarray(array)
    if palette is not None:
        image = image.convert("P")
        image.putpalette(np.asarray(palette, dtype=np.uint8).ravel().tolist())
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    options = {"quality": 95} if fmt == "JPEG" else {"compress_level": compress_level}
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **options)


def _open(path: Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise ReinError(f"image not found: {path}; check the path")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ReinError(f"cannot read image {path}: {err}; replace or remove the file") from err
    return image


def read_image(path: Path) -> np.ndarray:
    """An RGB image as (H, W, 3) uint8."""
    return np.asarray(_open(path).convert("RGB"))


def read_label(path: Path) -> np.ndarray:
    """A single-channel label map as (H, W) uint8 (palette PNGs give their indices)."""
    image = _open(path)
    if image.mode not in ("L", "P"):
        raise ReinError(f"label {path} has mode {image.mode}; labels must be single-channel 8-bit PNGs of class ids")
    return np.asarray(image)


def list_images(directory: Path) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted); an error when there are none."""
    files = sorted(p for p in Path(directory).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ReinError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {directory}; point to a folder of images")
    return files


def relative_path(path: Path, folder: Path) -> str:
    """``path`` relative to ``folder`` in POSIX form (as manifests store it); absolute across drives."""
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive (Windows)
        return str(Path(path).resolve())
