"""Whole-image and sliding-window inference: normalised images in, averaged per-class scores out. The windows of an
image (and of its mirror, with flip) and of consecutive images of one size go through the model in batches of up to
a window batch (`window_batch`); whole mode is one window per image."""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rein_cli.config import InferenceMode, check_choice
from rein_cli.errors import ReinError

# The automatic window batch: on the CPU a small one (batching gains little there and costs memory; measured in
# benchmarks/window_batch.py); on a GPU as many windows as half the free memory holds, at most `MAX_WINDOW_BATCH`.
CPU_WINDOW_BATCH = 2
MAX_WINDOW_BATCH = 32
FREE_MEMORY_SHARE = 0.5
_MEASURED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {(window shape, device): batch}


def slide_windows(height: int, width: int, crop: int, stride: int) -> list[tuple[int, int, int, int]]:
    """Window boxes (y1, y2, x1, x2) in mmseg's order: a grid of ``stride`` steps, the last windows
    shifted back so every window is ``crop`` wide (or the whole side, where the image is smaller)."""
    rows = max(height - crop + stride - 1, 0) // stride + 1
    cols = max(width - crop + stride - 1, 0) // stride + 1
    boxes = []
    for i in range(rows):
        for j in range(cols):
            y2, x2 = min(i * stride + crop, height), min(j * stride + crop, width)
            boxes.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return boxes


def check_stride(stride: int | None, crop: int) -> int:
    """The slide stride to use (default two thirds of the crop); a stride outside [1, crop] would skip pixels."""
    stride = default_stride(crop) if stride is None else stride
    if not 1 <= stride <= crop:
        raise ReinError(
            f"the slide stride {stride} must be between 1 and the crop size {crop}; windows would skip pixels"
        )
    return stride


def check_window_batch(window_batch: int | None) -> int | None:
    """``window_batch`` (None: automatic); fewer than one window per model call is refused."""
    if window_batch is not None and window_batch < 1:
        raise ReinError(
            f"the window batch {window_batch} must be at least 1 (windows per model call); leave it out for the "
            "automatic one"
        )
    return window_batch


def default_stride(crop: int) -> int:
    return round(2 * crop / 3)  # 341 for 512 and 683 for 1024, as in the official recipes


def cuda_window_batch(free_bytes: int, per_window_bytes: int) -> int:
    """The windows `FREE_MEMORY_SHARE` of ``free_bytes`` holds at ``per_window_bytes`` each, 1 to `MAX_WINDOW_BATCH`."""
    return max(1, min(MAX_WINDOW_BATCH, int(free_bytes * FREE_MEMORY_SHARE) // max(per_window_bytes, 1)))


def auto_window_batch(model: nn.Module, shape: tuple[int, int], device: torch.device) -> int:
    """The automatic window batch for windows of ``shape``: `CPU_WINDOW_BATCH` off a GPU; on one, from its free
    memory (and what PyTorch holds unused) and the peak memory one window's model call adds, measured once per
    model, window shape and device."""
    if device.type != "cuda":
        return CPU_WINDOW_BATCH
    known = _MEASURED.setdefault(model, {})
    if (shape, device) not in known:
        known[shape, device] = _measured_window_batch(model, shape, device)
    return known[shape, device]


@torch.no_grad()
def _measured_window_batch(model: nn.Module, shape: tuple[int, int], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    model.semantic_scores(torch.zeros(1, 3, *shape, device=device))
    per_window = torch.cuda.max_memory_allocated(device) - before
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return cuda_window_batch(free, per_window)


@dataclass
class _Image:
    """One image being scored: its views (the image, and with flip its mirror), their score canvases and the
    windows not scored yet."""

    views: list[Tensor]
    canvases: list[Tensor]
    count: Tensor
    left: int

    def scores(self) -> Tensor:
        """Each view's canvas divided by the count, the mirror's flipped back and averaged with the image's."""
        scores = self.canvases[0] / self.count
        if len(self.views) == 2:
            scores = (scores + (self.canvases[1] / self.count).flip(-1)) / 2
        return scores


@torch.no_grad()
def infer_stream(
    model: nn.Module,
    images: Iterable[Tensor],
    *,
    mode: InferenceMode,
    crop: int,
    stride: int | None = None,
    flip: bool = False,
    window_batch: int | None = None,
    autocast: torch.dtype | None = None,
) -> Iterator[Tensor]:
    """Each (3, H, W) or (1, 3, H, W) image's scores (1, K, H, W), in input order, as `infer` gives them; the windows
    of consecutive images of one size go through the model together, up to ``window_batch`` at a time (None:
    `auto_window_batch`); an image of another size first finishes those before it. ``autocast``: the model runs
    under autocast to this type, its scores summed in float32."""
    whole = check_choice("mode", mode, InferenceMode) == "whole"
    check_window_batch(window_batch)
    stride = stride or default_stride(crop)
    pending: deque[_Image] = deque()  # images in input order, their windows queued or scored
    queue: list[tuple[_Image, int, tuple[int, int, int, int]]] = []  # (image, view, box) not yet scored
    size = None

    def run(windows: list[tuple[_Image, int, tuple[int, int, int, int]]]) -> None:
        crops = torch.cat([image.views[v][:, :, y1:y2, x1:x2] for image, v, (y1, y2, x1, x2) in windows])
        with torch.autocast(crops.device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            scores = model.semantic_scores(crops).float()
        for k, (image, v, (y1, y2, x1, x2)) in enumerate(windows):
            image.canvases[v][:, :, y1:y2, x1:x2] += scores[k : k + 1]
            image.left -= 1

    def done() -> Iterator[Tensor]:
        while pending and pending[0].left == 0:
            yield pending.popleft().scores()

    for image in images:
        image = image if image.dim() == 4 else image[None]
        H, W = image.shape[-2:]
        boxes = [(0, H, 0, W)] if whole else slide_windows(H, W, crop, stride)
        if size != (H, W):  # another size: the windows queued first
            if queue:
                run(queue)
                queue = []
            yield from done()
            size = (H, W)
            shape = (boxes[0][1] - boxes[0][0], boxes[0][3] - boxes[0][2])
            limit = window_batch or auto_window_batch(model, shape, image.device)
        count = image.new_zeros((1, 1, H, W))
        for y1, y2, x1, x2 in boxes:
            count[:, :, y1:y2, x1:x2] += 1
        views = [image, image.flip(-1)] if flip else [image]
        canvases = [image.new_zeros((1, model.num_classes, H, W)) for _ in views]
        item = _Image(views, canvases, count, len(views) * len(boxes))
        pending.append(item)
        queue += [(item, v, box) for v in range(len(views)) for box in boxes]
        while len(queue) >= limit:
            run(queue[:limit])
            queue = queue[limit:]
        yield from done()
    if queue:
        run(queue)
    yield from done()


def infer(
    model: nn.Module,
    image: Tensor,
    *,
    mode: InferenceMode,
    crop: int,
    stride: int | None = None,
    flip: bool = False,
    window_batch: int | None = None,
    autocast: torch.dtype | None = None,
) -> Tensor:
    """Scores (B, K, H, W) by ``mode`` "slide" (stride default: two thirds of the crop; each window's scores summed
    into the canvas, divided by the count) or "whole", the windows of the B images in batches of up to
    ``window_batch`` (`infer_stream`).

    ``flip``: test-time augmentation, the average of the image's scores and those of its horizontal mirror
    (flipped back); without it the scores are the image's alone. ``autocast``: the model runs under autocast to this
    type (`rein_cli.engine.precision`), its scores back in float32 before anything is summed or compared."""
    run = infer_stream(
        model,
        image.unbind(0),
        mode=mode,
        crop=crop,
        stride=stride,
        flip=flip,
        window_batch=window_batch,
        autocast=autocast,
    )
    return torch.cat(list(run))
