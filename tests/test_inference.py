"""Sliding-window placement and averaging, whole-image inference."""

import pytest
import torch
from torch import nn

from rein_cli.engine.inference import default_stride, slide_inference, slide_windows


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
        x0 = self.offsets.pop(0)
        W = image.shape[-1]
        xs = torch.arange(x0, x0 + W, dtype=torch.float32).expand(image.shape[0], 1, image.shape[-2], W)
        return torch.cat([xs, torch.ones_like(xs)], dim=1)


def test_slide_inference_averages_overlaps_by_count():
    boxes = slide_windows(64, 160, crop=64, stride=42)
    model = PositionModel([b[2] for b in boxes])
    scores = slide_inference(model, torch.zeros(1, 3, 64, 160), crop=64, stride=42)
    torch.testing.assert_close(
        scores[0, 0, 0], torch.arange(160, dtype=torch.float32)
    )  # consistent windows average exactly
    torch.testing.assert_close(scores[0, 1], torch.ones(64, 160))
