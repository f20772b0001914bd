"""Prediction for files and directories: label PNGs (train ids), colour PNGs, and overlays on the image."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rein_cli.config import InferenceMode, check_choice
from rein_cli.data.transforms import EvalTransform
from rein_cli.engine.checkpoint import load_segmentor
from rein_cli.engine.inference import check_stride, infer
from rein_cli.errors import ReinError
from rein_cli.io import IMAGE_SUFFIXES, check_writable, list_images, read_image, save_image
from rein_cli.labels import colorize
from rein_cli.models.segmentor import model_device
from rein_cli.progress import track

log = logging.getLogger(__name__)


def collect_inputs(inputs: list[Path]) -> list[tuple[Path, Path]]:
    """(image file, output name relative to the output folder) for files and directories of images."""
    if not inputs:
        raise ReinError("no inputs given; name image files or directories")
    items: list[tuple[Path, Path]] = []
    for source in map(Path, inputs):
        if source.is_dir():
            items += [(f, f.relative_to(source).with_suffix("")) for f in list_images(source)]
        elif source.is_file():
            if source.suffix.lower() not in IMAGE_SUFFIXES:
                raise ReinError(f"{source} is not an image ({', '.join(IMAGE_SUFFIXES)})")
            items.append((source, Path(source.stem)))
        else:
            raise ReinError(f"input not found: {source}; check the path")
    names = [name for _, name in items]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ReinError(f"two inputs would both write {dup}; predict them into separate --out folders")
    return items


def unreadable_inputs(items: list[tuple[Path, Path]], *, progress: bool = True) -> dict[Path, str]:
    """{input: the one-line reason} for every input that the safe reader cannot decode in full (empty, truncated,
    too large, unsupported mode, not an image); each image is dropped once decoded, so memory holds one at a time."""
    problems = {}
    for path, _ in track(items, desc="checking inputs", unit="img", bar=progress):
        try:
            read_image(path)
        except ReinError as err:
            problems[path] = str(err)
    return problems


def predict(
    model: nn.Module | str | Path,
    inputs: list[Path],
    out: Path,
    *,
    mode: InferenceMode = "slide",
    stride: int | None = None,
    size: tuple[int, int] | None = None,
    device: str = "auto",
    overlay_alpha: float = 0.5,
    skip_bad: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Segment every input image; writes ``out/labels``, ``out/color`` and ``out/overlay``. Returns the label files.

    Every input is decoded in full before anything is written: an unreadable one stops the run with nothing written,
    or with ``skip_bad`` the others are segmented, the unreadable ones logged one line each, and a `ReinError` at
    the end says how many failed.

    ``size`` = (long, short) resizes each image keeping its ratio before inference (e.g. (1024, 512) for
    Cityscapes-like inputs); predictions are resized back to the input's resolution. Colours come from the
    model's palette.
    """
    check_choice("mode", mode, InferenceMode)
    items = collect_inputs(inputs)
    bad = unreadable_inputs(items, progress=progress)
    if bad and not skip_bad:
        first, *others = bad.values()
        for problem in others:
            log.error("%s", problem)
        also = f" (and {len(others)} more inputs, listed above)" if others else ""
        raise ReinError(f"{first}{also}; nothing was written (--skip-bad segments the readable inputs)")
    items = [(path, name) for path, name in items if path not in bad]
    if not items:
        for problem in bad.values():
            log.error("%s", problem)
        raise ReinError(f"none of the {len(bad)} inputs can be read (listed above); nothing was written")
    check_writable(out)
    if not isinstance(model, nn.Module):
        model = load_segmentor(model, device)
    if mode == "slide":
        stride = check_stride(stride, model.crop_size)
    transform = EvalTransform(model.mean, model.std, size)
    device_ = model_device(model)
    model.eval()
    written = []
    for path, name in track(items, desc="predicting", unit="img", bar=progress, leave=True):
        rgb = read_image(path)
        image, _ = transform(torch.from_numpy(np.array(rgb)), None)
        scores = infer(model, image[None].to(device_), mode=mode, crop=model.crop_size, stride=stride)
        if scores.shape[-2:] != rgb.shape[:2]:
            scores = torch.nn.functional.interpolate(scores, size=rgb.shape[:2], mode="bilinear", align_corners=False)
        label = scores.argmax(1)[0].to(torch.uint8).cpu().numpy()
        color = colorize(label, model.palette)
        blend = rgb.astype(np.float32) * (1 - overlay_alpha) + color.astype(np.float32) * overlay_alpha
        save_image(out / "labels" / f"{name}.png", label)
        save_image(out / "color" / f"{name}.png", color)
        save_image(out / "overlay" / f"{name}.jpg", blend.astype(np.uint8))
        written.append(out / "labels" / f"{name}.png")
    log.info("wrote %d predictions to %s", len(written), out)
    if bad:
        for problem in bad.values():
            log.error("skipped: %s", problem)
        raise ReinError(
            f"{len(bad)} of {len(bad) + len(written)} inputs could not be read and were skipped (listed "
            f"above); the other {len(written)} are in {out}"
        )
    return written
