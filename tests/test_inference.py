"""Sliding-window placement and averaging, whole-image inference, and the batched windows against the one window at
a time reference."""

import pytest
import torch
from torch import nn

from rein_cli.engine.inference import (
    check_window_batch,
    cuda_window_batch,
    default_stride,
    infer,
    infer_stream,
    slide_windows,
)
from rein_cli.errors import ReinError

from .helpers import tiny_family, tiny_segmentor


@torch.no_grad()
def slide_reference(model, image, crop, stride):
    """The definition, one window at a time: each window's scores summed into the canvas, divided by the count."""
    B, _, H, W = image.shape
    scores = image.new_zeros((B, model.num_classes, H, W))
    count = image.new_zeros((1, 1, H, W))
    for y1, y2, x1, x2 in slide_windows(H, W, crop, stride):
        scores[:, :, y1:y2, x1:x2] += model.semantic_scores(image[:, :, y1:y2, x1:x2])
        count[:, :, y1:y2, x1:x2] += 1
    return scores / count


@torch.no_grad()
def reference(model, image, *, mode, crop, stride=None, flip=False):
    """`infer` as it was: the whole image or its windows one at a time, with flip averaged with its mirror's."""
    run = model.semantic_scores if mode == "whole" else lambda x: slide_reference(model, x, crop, stride or 43)
    scores = run(image)
    return (scores + run(image.flip(-1)).flip(-1)) / 2 if flip else scores


def assert_equivalent(batched, slow):
    """The speed work's tolerance: scores within 1e-4 of their scale, argmax identical on >= 99.99% of pixels."""
    assert batched.shape == slow.shape
    assert (batched - slow).abs().max() / slow.abs().max() <= 1e-4
    assert (batched.argmax(1) == slow.argmax(1)).float().mean() >= 0.9999


@pytest.mark.parametrize(
    "size, rows, cols",
    [
        ((512, 1024), [0], [0, 341, 512]),
        ((720, 1280), [0, 208], [0, 341, 682, 768]),
        ((540, 960), [0, 28], [0, 341, 448]),
    ],
)
def test_slide_windows_match_the_official_placement(size, rows, cols):
    boxes = slide_windows(*size, crop=512, stride=341)
    assert len(boxes) == len(rows) * len(cols)
    assert sorted({b[0] for b in boxes}) == rows and sorted({b[2] for b in boxes}) == cols
    assert all(y2 - y1 == 512 and x2 - x1 == 512 for y1, y2, x1, x2 in boxes)


def test_windows_on_a_small_image_cover_it_once():
    assert slide_windows(256, 300, crop=512, stride=341) == [(0, 256, 0, 300)]


def test_default_strides():
    assert default_stride(512) == 341 and default_stride(1024) == 683


class PositionModel(nn.Module):
    """Scores = the absolute x coordinate of each pixel in channel 0, 1 elsewhere (window-independent)."""

    num_classes = 2

    def __init__(self, offsets):
        super().__init__()
        self.offsets = offsets

    def semantic_scores(self, image):
        W = image.shape[-1]
        rows = []
        for _ in range(image.shape[0]):  # one offset per window of the batch
            x0 = self.offsets.pop(0)
            rows.append(torch.arange(x0, x0 + W, dtype=torch.float32).expand(1, 1, image.shape[-2], W))
        xs = torch.cat(rows)
        return torch.cat([xs, torch.ones_like(xs)], dim=1)


@pytest.mark.parametrize("window_batch", [1, 2, 100])
def test_slide_inference_averages_overlaps_by_count(window_batch):
    boxes = slide_windows(64, 160, crop=64, stride=42)
    model = PositionModel([b[2] for b in boxes])
    scores = infer(model, torch.zeros(1, 3, 64, 160), mode="slide", crop=64, stride=42, window_batch=window_batch)
    torch.testing.assert_close(
        scores[0, 0, 0], torch.arange(160, dtype=torch.float32)
    )  # consistent windows average exactly
    torch.testing.assert_close(scores[0, 1], torch.ones(64, 160))


class Counting(nn.Module):
    """A model that records how many windows each call gets."""

    def __init__(self, model):
        super().__init__()
        self.model, self.batches = model, []
        self.num_classes = model.num_classes

    def semantic_scores(self, image):
        self.batches.append(image.shape[0])
        return self.model.semantic_scores(image)


# A stream of images: two of one size (4 windows each at crop 64, stride 43), another size (a size change
# flushes), one smaller than the crop on both sides (one window of its own size), and the first size again.
SIZES = [(64, 160), (64, 160), (100, 120), (40, 50), (64, 160)]


def stream_images():
    torch.manual_seed(1)
    return [torch.randn(3, h, w) for h, w in SIZES]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("mode", ["slide", "whole"])
@pytest.mark.parametrize("window_batch", [1, 2, 5, 100])
def test_batched_windows_equal_one_window_at_a_time(window_batch, mode, flip):
    model, images = tiny_segmentor(), stream_images()
    got = list(infer_stream(model, iter(images), mode=mode, crop=64, stride=43, flip=flip, window_batch=window_batch))
    assert len(got) == len(images)
    for image, scores in zip(images, got, strict=True):  # in input order, each its own image's scores
        assert_equivalent(scores, reference(model, image[None], mode=mode, crop=64, stride=43, flip=flip))


def test_a_mask2former_model_batched_equals_one_window_at_a_time():
    model, images = tiny_family("dinov2-s").eval(), stream_images()[:3]
    got = infer_stream(model, images, mode="slide", crop=64, stride=43, flip=True, window_batch=4)
    for image, scores in zip(images, got, strict=True):
        assert_equivalent(scores, reference(model, image[None], mode="slide", crop=64, stride=43, flip=True))


@pytest.mark.parametrize("window_batch", [1, 3])
def test_infer_batches_the_windows_of_an_image_batch(window_batch):
    model = tiny_segmentor()
    torch.manual_seed(2)
    images = torch.randn(3, 3, 64, 112)
    slow = reference(model, images, mode="slide", crop=64, stride=40, flip=True)
    assert_equivalent(
        infer(model, images, mode="slide", crop=64, stride=40, flip=True, window_batch=window_batch), slow
    )


@pytest.mark.parametrize(
    "window_batch, flip, batches",
    [
        (3, False, [3, 3, 2, 3, 3, 1, 3, 1]),  # 4 + 4 windows filled across the first two images, then flushed
        (100, False, [8, 6, 1, 4]),
        (100, True, [16, 12, 2, 8]),  # each image with its mirror in one call
        (5, True, [5, 5, 5, 1, 5, 5, 2, 2, 5, 3]),
    ],
)
def test_the_window_batch_bounds_every_call_and_a_size_change_flushes(window_batch, flip, batches):
    model = Counting(tiny_segmentor())
    list(infer_stream(model, stream_images(), mode="slide", crop=64, stride=43, flip=flip, window_batch=window_batch))
    assert model.batches == batches


def test_whole_mode_batches_consecutive_images_of_one_size():
    model = Counting(tiny_segmentor())
    list(infer_stream(model, stream_images(), mode="whole", crop=64, window_batch=8))
    assert model.batches == [2, 1, 1, 1]


def test_the_stream_yields_an_image_as_soon_as_its_windows_are_scored():
    model, taken = tiny_segmentor(), []

    def images():
        for image in stream_images():
            taken.append(image)
            yield image

    stream = infer_stream(model, images(), mode="slide", crop=64, stride=43, window_batch=4)
    next(stream)
    assert len(taken) == 1  # the first image's 4 windows filled a call: its scores come before the next is read


def test_the_automatic_window_batch_batches_on_the_cpu():
    model = Counting(tiny_segmentor())
    list(infer_stream(model, stream_images()[:2], mode="slide", crop=64, stride=43))
    assert max(model.batches) > 1 and sum(model.batches) == 8


def test_the_gpu_window_batch_follows_the_free_memory():
    assert cuda_window_batch(free_bytes=8 * 2**30, per_window_bytes=2**30) == 4  # half of what is free
    assert cuda_window_batch(free_bytes=2**30, per_window_bytes=2**31) == 1  # at least one
    assert cuda_window_batch(free_bytes=80 * 2**30, per_window_bytes=2**20) == 32  # at most 32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_on_a_gpu_the_automatic_window_batch_is_measured_once_and_scores_equal():
    from rein_cli.engine.inference import MAX_WINDOW_BATCH, auto_window_batch

    model, device = tiny_segmentor().cuda(), torch.device("cuda")
    n = auto_window_batch(model, (64, 64), device)
    assert 1 <= n <= MAX_WINDOW_BATCH and auto_window_batch(model, (64, 64), device) == n
    image = stream_images()[0][None].to(device)
    slow = reference(model, image, mode="slide", crop=64, stride=43, flip=True)
    assert_equivalent(infer(model, image, mode="slide", crop=64, stride=43, flip=True), slow)


@pytest.mark.parametrize("value", [0, -3])
def test_a_window_batch_below_one_is_refused_naming_it(value):
    with pytest.raises(ReinError, match=rf"^the window batch {value} must be at least 1 .*leave it out"):
        check_window_batch(value)
    model, image = tiny_segmentor(), torch.zeros(1, 3, 64, 64)
    with pytest.raises(ReinError, match=f"window batch {value}"):
        infer(model, image, mode="whole", crop=64, window_batch=value)
    assert infer(model, image, mode="whole", crop=64).shape == (1, model.num_classes, 64, 64)  # left out: automatic
