"""Paired image/label transforms: the official training pipeline and the test-time resize.

Training (rein-facts §6.3): random short-edge resize from a list of scales (with a cap on the long
edge), random crop with ``cat_max_ratio`` (up to 10 tries), horizontal flip, photometric distortion
(brightness, contrast, saturation, hue, as in mmcv's defaults), normalisation, padding to the crop
(image 0 after normalisation, label 255). Images are (3, H, W) float tensors in 0..255 until
normalised; labels are (H, W) uint8 tensors. Randomness comes from torch's global generator, which
the data loader seeds per worker.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rein_cli.labels import IGNORE_INDEX


def resize(image: Tensor, label: Tensor | None, size: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
    """Bilinear image, nearest label (both without antialiasing, like OpenCV); ``size`` is (H, W)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(torch.uint8)
    return image, label


def keep_ratio_size(height: int, width: int, long_edge: int, short_edge: int) -> tuple[int, int]:
    """The keep-ratio target of mmcv's ``imrescale``: the largest size fitting (long, short)."""
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def short_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """Scale so the short edge is ``short``, unless the long edge would pass ``max_size``."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def random_crop(
    image: Tensor, label: Tensor, crop: int, cat_max_ratio: float = 0.75, tries: int = 10
) -> tuple[Tensor, Tensor]:
    """A random crop (smaller where the image is), as mmseg's ``RandomCrop``: up to ``tries`` crops are checked
    until one has more than one class and none covering ``cat_max_ratio`` or more of its labeled pixels; each
    failed check draws the next crop, so after ``tries`` failures the crop taken is one more, unchecked."""
    H, W = label.shape

    def draw() -> tuple[int, int]:
        return int(torch.randint(0, max(H - crop, 0) + 1, ())), int(torch.randint(0, max(W - crop, 0) + 1, ()))

    y, x = draw()
    if cat_max_ratio < 1.0:
        for _ in range(tries):
            counts = torch.bincount(label[y : y + crop, x : x + crop].flatten().long(), minlength=256)[:IGNORE_INDEX]
            counts = counts[counts > 0]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            y, x = draw()
    return image[:, y : y + crop, x : x + crop], label[y : y + crop, x : x + crop]


def _rgb_to_hsv(rgb: Tensor) -> Tensor:
    """(3, H, W) in [0, 1] -> HSV with H in [0, 1)."""
    r, g, b = rgb
    maxc, minc = rgb.max(0).values, rgb.min(0).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(delta > 0, (hue / 6.0) % 1.0, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc])


def _hsv_to_rgb(hsv: Tensor) -> Tensor:
    h, s, v = hsv
    k = (torch.tensor([5.0, 3.0, 1.0]).view(3, 1, 1) + h * 6.0) % 6.0
    return v - v * s * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)


def photometric_distortion(image: Tensor) -> Tensor:
    """mmcv's PhotoMetricDistortion defaults on a (3, H, W) 0..255 image: brightness +-32, contrast and
    saturation x[0.5, 1.5], hue by an integer in [-18, 18) of 180 steps, each with probability 1/2; contrast
    before or after."""

    def coin() -> bool:
        return bool(torch.rand(()) < 0.5)

    def uniform(lo: float, hi: float) -> float:
        return float(torch.empty(()).uniform_(lo, hi))

    if coin():
        image = (image + uniform(-32, 32)).clamp(0, 255)
    contrast_first = coin()
    if contrast_first and coin():
        image = (image * uniform(0.5, 1.5)).clamp(0, 255)
    saturate, shift = coin(), coin()
    if saturate or shift:
        hsv = _rgb_to_hsv(image / 255.0)
        if saturate:
            hsv[1] = (hsv[1] * uniform(0.5, 1.5)).clamp(0, 1)
        if shift:
            hsv[0] = (hsv[0] + int(torch.randint(-18, 18, ())) / 180.0) % 1.0  # mmcv: randint(-18, 18), 18 excluded
        image = _hsv_to_rgb(hsv) * 255.0
    if not contrast_first and coin():
        image = (image * uniform(0.5, 1.5)).clamp(0, 255)
    return image


def normalize(image: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """0..255 RGB -> (x / 255 - mean) / std, with mean and std in 0..1 units (timm's convention)."""
    mean_t = torch.tensor(mean, dtype=image.dtype).view(3, 1, 1) * 255.0
    std_t = torch.tensor(std, dtype=image.dtype).view(3, 1, 1) * 255.0
    return (image - mean_t) / std_t


class TrainTransform:
    """The official training pipeline on one (uint8 HWC image, uint8 HW label) pair."""

    def __init__(
        self,
        crop: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        resize_ratios: Sequence[float],
        max_size_ratio: float = 4.0,
        cat_max_ratio: float = 0.75,
        photometric: bool = True,
    ) -> None:
        self.crop, self.mean, self.std = crop, mean, std
        self.shorts = [int(crop * r) for r in resize_ratios]
        self.max_size = int(crop * max_size_ratio)
        self.cat_max_ratio, self.photometric = cat_max_ratio, photometric

    def __call__(self, image: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
        image = image.permute(2, 0, 1).float()  # (H, W, 3) uint8 -> (3, H, W) float
        if self.shorts:
            short = self.shorts[int(torch.randint(len(self.shorts), ()))]
            image, label = resize(image, label, short_edge_size(*label.shape, short, self.max_size))
        image, label = random_crop(image, label, self.crop, self.cat_max_ratio)
        if torch.rand(()) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        if self.photometric:
            image = photometric_distortion(image)
        image = normalize(image, self.mean, self.std)
        pad_h, pad_w = self.crop - label.shape[0], self.crop - label.shape[1]
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        label = F.pad(label, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
        return image.contiguous(), label.long().contiguous()


class EvalTransform:
    """Test-time: optional keep-ratio resize of the image (the label keeps its resolution), normalisation."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], size: tuple[int, int] | None = None) -> None:
        self.mean, self.std, self.size = mean, std, size

    def __call__(self, image: Tensor, label: Tensor | None) -> tuple[Tensor, Tensor | None]:
        image = image.permute(2, 0, 1).float()
        if self.size is not None:
            image, _ = resize(image, None, keep_ratio_size(*image.shape[-2:], *self.size))
        return normalize(image, self.mean, self.std), None if label is None else label.long()
