"""Prediction for files and directories: label PNGs (train ids), colour PNGs, and overlays on the image.

The model runs in the calling thread, on batches of same-size images; worker threads decode the next images and
write the previous results meanwhile, both through bounded queues, so memory holds a few batches at most.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rein_cli.config import InferenceMode, Precision, check_choice
from rein_cli.data.transforms import EvalTransform
from rein_cli.engine.checkpoint import load_segmentor
from rein_cli.engine.compile import compile_for
from rein_cli.engine.inference import check_stride, check_window_batch, infer
from rein_cli.engine.precision import inference_precision
from rein_cli.errors import ReinError, did_you_mean
from rein_cli.io import IMAGE_SUFFIXES, check_writable, list_images, read_image, save_image
from rein_cli.labels import colorize
from rein_cli.models.segmentor import model_device
from rein_cli.progress import Progress

log = logging.getLogger(__name__)

# What predict can write for each image: the folder under --out and the file suffix.
FORMATS = {"label": ("labels", ".png"), "colour": ("color", ".png"), "overlay": ("overlay", ".jpg")}
FORMAT_ALIASES = {"color": "colour", "labels": "label", "overlays": "overlay"}
WORKERS = 2  # decoding and writing threads (PIL and torch release the GIL for the heavy parts)


def parse_formats(values: Iterable[str] | None) -> tuple[str, ...]:
    """``["label,overlay"]`` or ``["label", "overlay"]`` -> ("label", "overlay"), in FORMATS order; None or empty:
    every format. An unknown name is an error that lists the choices."""
    names = [part.strip().lower() for value in values or () for part in str(value).split(",") if part.strip()]
    if not names:
        return tuple(FORMATS)
    chosen = set()
    for name in names:
        name = FORMAT_ALIASES.get(name, name)
        if name not in FORMATS:
            raise ReinError(
                f'--format "{name}" is unknown; choose from {", ".join(FORMATS)}{did_you_mean(name, FORMATS)}'
            )
        chosen.add(name)
    return tuple(f for f in FORMATS if f in chosen)


def collect_inputs(inputs: list[Path], out: Path | None = None) -> list[tuple[Path, Path]]:
    """(image file, output name relative to the output folder) for files and directories of images; a directory's
    subfolders are kept (``a/x/1.png`` given ``a`` -> ``x/1``). Predict never reads its own outputs: an ``out``
    inside an input directory is left out of it (when ``out`` is the directory itself, the folders predict writes
    there), and a log line says so."""
    if not inputs:
        raise ReinError("no inputs given; name image files or directories")
    items: list[tuple[Path, Path]] = []
    for source in map(Path, inputs):
        if source.is_dir():
            skipped, note = _own_outputs(source, out)
            files = [f for f in list_images(source) if not any(f.is_relative_to(s) for s in skipped)]
            if skipped:
                log.info("%s", note)
                if not files:
                    raise ReinError(f"no images in {source} besides the outputs in --out {out}; point to the images")
            items += [(f, f.relative_to(source).with_suffix("")) for f in files]
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


def _own_outputs(source: Path, out: Path | None) -> tuple[list[Path], str]:
    """The folders under the input directory ``source`` that predict writes into ``out`` (as paths below
    ``source``), and the log line that says they are left out: ``out`` itself when it lies inside ``source``, its
    format folders when it is ``source``; none when ``out`` is elsewhere."""
    if out is None:
        return [], ""
    try:
        inside = Path(os.path.realpath(out)).relative_to(os.path.realpath(source))
    except ValueError:
        return [], ""
    if inside == Path():
        names = ", ".join(f"{folder}/" for folder, _ in FORMATS.values())
        note = f"--out {out} is the input folder: its {names} (predict's outputs) are left out of the inputs"
        return [source / folder for folder, _ in FORMATS.values()], note
    return [source / inside], f"--out {out} is inside the input folder {source}: its files are left out of the inputs"


def _problem(path: Path) -> str | None:
    try:
        read_image(path)
    except ReinError as err:
        return str(err)
    return None


def unreadable_inputs(items: list[tuple[Path, Path]], *, progress: bool = True) -> dict[Path, str]:
    """{input: the one-line reason} for every input that the safe reader cannot decode in full (empty, truncated,
    too large, unsupported mode, not an image), in input order; decoded in worker threads, each image dropped once
    decoded."""
    problems = {}
    with ThreadPoolExecutor(WORKERS) as pool, Progress(len(items), "checking inputs", unit="img", bar=progress) as bar:
        for (path, _), problem in zip(items, pool.map(_problem, [p for p, _ in items]), strict=True):
            if problem is not None:
                problems[path] = problem
            bar.update()
    return problems


@dataclass
class _Decoded:
    path: Path
    name: Path
    rgb: np.ndarray  # the input as read: (H, W, 3) uint8
    image: Tensor  # the model's input: (3, h, w), resized and normalised


def _ahead(pool: ThreadPoolExecutor, fn, items: Sequence, depth: int) -> Iterator:
    """``fn(item)`` for every item, in order, computed in ``pool`` up to ``depth`` items ahead."""
    pending: deque[Future] = deque()
    source = iter(items)
    for item in source:
        pending.append(pool.submit(fn, item))
        if len(pending) >= depth:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(source, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield result


def _batches(decoded: Iterator[_Decoded], batch_size: int) -> Iterator[list[_Decoded]]:
    """Consecutive images in batches of up to ``batch_size`` whose model inputs have one size (order kept)."""
    batch: list[_Decoded] = []
    for item in decoded:
        if batch and (len(batch) == batch_size or item.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


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
    formats: Sequence[str] | None = None,
    batch_size: int = 1,
    precision: str = "auto",
    progress: bool = True,
    window_batch: int | None = None,
    compile: bool = False,
) -> list[Path]:
    """Segment every input image; writes ``out/labels/NAME.png`` (train ids), ``out/color/NAME.png`` (the model's
    palette) and ``out/overlay/NAME.jpg``, or the ``formats`` chosen of "label", "colour" and "overlay". NAME keeps
    an input directory's subfolders. Returns the files of the first format chosen (the label files by default).

    Every input is decoded in full before anything is written: an unreadable one stops the run with nothing written,
    or with ``skip_bad`` the others are segmented, the unreadable ones logged one line each, and a `ReinError` at
    the end says how many failed.

    ``batch_size`` images of one size (after ``size``) go through the model together, their windows in calls of up
    to ``window_batch`` (None: automatic); any batch size and window batch give the same files. ``size`` = (long, short)
    resizes each image keeping its ratio before inference (e.g. (1024, 512) for Cityscapes-like inputs); predictions
    are resized back to the input's resolution.
    ``precision``: auto, bf16 or fp32 (`rein_cli.engine.precision`), what runs said in one log line.
    ``compile``: torch.compile the model for these calls (`rein_cli.engine.compile`; each image size compiles once).
    """
    check_choice("mode", mode, InferenceMode)
    check_choice("precision", precision, Precision)
    formats = parse_formats(formats)
    if batch_size < 1:
        raise ReinError(f"batch size {batch_size} must be at least 1")
    check_window_batch(window_batch)
    items = collect_inputs(inputs, out)
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
    palette = model.palette
    model.eval()
    chosen = inference_precision(precision, device_)
    (log.warning if chosen.warn else log.info)("%s", chosen)

    def decode(item: tuple[Path, Path]) -> _Decoded:
        path, name = item
        rgb = read_image(path)
        image, _ = transform(torch.from_numpy(np.array(rgb)), None)
        return _Decoded(path, name, rgb, image)

    def write(item: _Decoded, label: np.ndarray) -> list[Path]:
        paths = []
        for kind in formats:
            folder, suffix = FORMATS[kind]
            path = out / folder / f"{item.name}{suffix}"
            if kind == "label":
                save_image(path, label)
            else:
                color = colorize(label, palette)
                if kind == "overlay":
                    blend = item.rgb.astype(np.float32) * (1 - overlay_alpha) + color.astype(np.float32) * overlay_alpha
                    color = blend.astype(np.uint8)
                save_image(path, color)
            paths.append(path)
        return paths

    written: list[Path] = []
    writes: deque[tuple[_Decoded, Future]] = deque()

    def finish(bar: Progress, keep: int) -> None:
        """Wait for the oldest writes until at most ``keep`` are pending; in input order, so the log is too."""
        while len(writes) > keep:
            item, future = writes.popleft()
            written.append(future.result()[0])
            log.debug("wrote %s", item.name)
            bar.update()

    undo = compile_for(model, device_, compile)
    pool = ThreadPoolExecutor(WORKERS)
    try:
        with Progress(len(items), "predicting", unit="img", bar=progress, leave=True) as bar:
            for batch in _batches(_ahead(pool, decode, items, 2 * batch_size + WORKERS), batch_size):
                images = torch.stack([item.image for item in batch]).to(device_)
                scores = infer(
                    model,
                    images,
                    mode=mode,
                    crop=model.crop_size,
                    stride=stride,
                    window_batch=window_batch,
                    autocast=chosen.dtype,
                )
                for k, item in enumerate(batch):
                    one = scores[k : k + 1]
                    if one.shape[-2:] != item.rgb.shape[:2]:
                        one = torch.nn.functional.interpolate(
                            one, size=item.rgb.shape[:2], mode="bilinear", align_corners=False
                        )
                    label = one.argmax(1)[0].to(torch.uint8).cpu().numpy()
                    writes.append((item, pool.submit(write, item, label)))
                finish(bar, keep=2 * batch_size)
            finish(bar, keep=0)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        undo()
    log.info("wrote %d predictions to %s", len(written), out)
    if bad:
        for problem in bad.values():
            log.error("skipped: %s", problem)
        raise ReinError(
            f"{len(bad)} of {len(bad) + len(written)} inputs could not be read and were skipped (listed "
            f"above); the other {len(written)} are in {out}"
        )
    return written
