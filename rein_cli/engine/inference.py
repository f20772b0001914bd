"""Whole-image and sliding-window inference: normalised images in, averaged per-class scores out."""

from __future__ import annotations

import functools

import torch
from torch import Tensor, nn

from rein_cli.config import InferenceMode, check_choice
from rein_cli.errors import ReinError


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


@torch.no_grad()
def slide_inference(model: nn.Module, image: Tensor, crop: int = 512, stride: int = 341) -> Tensor:
    """(B, 3, H, W) -> (B, K, H, W): each window's scores summed into the canvas, divided by the count."""
    B, _, H, W = image.shape
    scores = image.new_zeros((B, model.num_classes, H, W))
    count = image.new_zeros((1, 1, H, W))
    for y1, y2, x1, x2 in slide_windows(H, W, crop, stride):
        scores[:, :, y1:y2, x1:x2] += model.semantic_scores(image[:, :, y1:y2, x1:x2])
        count[:, :, y1:y2, x1:x2] += 1
    return scores / count


@torch.no_grad()
def whole_inference(model: nn.Module, image: Tensor) -> Tensor:
    return model.semantic_scores(image)


def check_stride(stride: int | None, crop: int) -> int:
    """The slide stride to use (default two thirds of the crop); a stride outside [1, crop] would skip pixels."""
    stride = default_stride(crop) if stride is None else stride
    if not 1 <= stride <= crop:
        raise ReinError(
            f"the slide stride {stride} must be between 1 and the crop size {crop}; windows would skip pixels"
        )
    return stride


def infer(
    model: nn.Module,
    image: Tensor,
    *,
    mode: InferenceMode,
    crop: int,
    stride: int | None = None,
    flip: bool = False,
    autocast: torch.dtype | None = None,
) -> Tensor:
    """Scores (B, K, H, W) by ``mode`` "slide" (stride default: two thirds of the crop) or "whole".

    ``flip``: test-time augmentation, the average of the image's scores and those of its horizontal mirror
    (flipped back); without it the scores are the image's alone. ``autocast``: the model runs under autocast to this
    type (`rein_cli.engine.precision`), its scores back in float32 before anything is summed or compared."""
    if check_choice("mode", mode, InferenceMode) == "whole":
        run = functools.partial(whole_inference, model)
    else:
        run = functools.partial(slide_inference, model, crop=crop, stride=stride or default_stride(crop))
    if autocast is not None:
        run = functools.partial(_autocast, run, autocast)
    scores = run(image)
    if flip:
        scores = (scores + run(image.flip(-1)).flip(-1)) / 2
    return scores


def _autocast(run: functools.partial, dtype: torch.dtype, image: Tensor) -> Tensor:
    """``run(image)`` under autocast to ``dtype``, the scores in float32 (a slide canvas is float32 already)."""
    with torch.autocast(image.device.type, dtype=dtype):
        return run(image).float()


def default_stride(crop: int) -> int:
    return round(2 * crop / 3)  # 341 for 512 and 683 for 1024, as in the official recipes
