"""Paired image/label transforms: the official training pipeline and the test-time resize.

Training (rein-facts §6.3): random short-edge resize from a list of scales (with a cap on the long
edge), random crop with ``cat_max_ratio`` (up to 10 tries), horizontal flip, photometric distortion
(brightness, contrast, saturation, hue, as mmseg's defaults compute it), normalisation, padding to the crop
(image 0 after normalisation, label 255). Images are (3, H, W) uint8 tensors until normalised, as the
official pipeline keeps them (each resize and distortion step ends in uint8); labels are (H, W) uint8
tensors. Randomness comes from torch's global generator, which the data loader seeds per worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from rein_cli.labels import IGNORE_INDEX


def resize(image: Tensor, label: Tensor | None, size: tuple[int, int]) -> tuple[Tensor, Tensor | None]:
    """Bilinear image, nearest label (both without antialiasing, like OpenCV); ``size`` is (H, W)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image, label
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    if label is not None:  # nearest only picks values: on the uint8 label itself, without a float copy
        label = F.interpolate(label[None, None], size=size, mode="nearest")[0, 0]
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


# OpenCV's 8-bit RGB <-> HSV (what mmcv's bgr2hsv / hsv2bgr call on uint8 images): hue in 0..179 (2 degrees a step),
# saturation and value in 0..255. RGB -> HSV is integer arithmetic with 12-bit fixed-point reciprocal tables;
# HSV -> RGB is float32 arithmetic truncated to an integer (OpenCV's color_hsv.simd.hpp: its vectorised loop, which
# converts every pixel of a row but the last width % (4 x SIMD lanes); those few it rounds instead, and on a CPU
# without fused multiply-add the loop rounds 1 - s * h twice).
_HSV_SHIFT = 12
_STEPS = torch.arange(256, dtype=torch.float64)
_SDIV = torch.where(_STEPS > 0, torch.round((255 << _HSV_SHIFT) / _STEPS.clamp(min=1)), 0).int()
_HDIV = torch.where(_STEPS > 0, torch.round((180 << _HSV_SHIFT) / (6 * _STEPS.clamp(min=1))), 0).int()
# per hue sector (0..5), which of (v, v(1 - s), v(1 - s h), v(1 - s (1 - h))) is red, green and blue
_SECTORS = torch.tensor([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]]).T  # (3, 6)


def rgb_to_hsv_u8(rgb: Tensor) -> Tensor:
    """(3, H, W) uint8 RGB -> uint8 HSV exactly as OpenCV's ``COLOR_RGB2HSV`` (``BGR2HSV`` on BGR) computes it."""
    r, g, b = rgb.int().unbind(0)
    v = torch.maximum(torch.maximum(r, g), b)
    diff = v - torch.minimum(torch.minimum(r, g), b)
    half = 1 << (_HSV_SHIFT - 1)
    s = (diff * _SDIV[v] + half) >> _HSV_SHIFT
    h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
    h = (h * _HDIV[diff] + half) >> _HSV_SHIFT  # an arithmetic shift: floor division, as in C on these ints
    h = h + (h < 0) * 180
    return torch.stack([h, s, v]).to(torch.uint8)


def hsv_to_rgb_u8(hsv: Tensor) -> Tensor:
    """(3, H, W) uint8 HSV (hue 0..179) -> uint8 RGB exactly as OpenCV's ``COLOR_HSV2RGB`` computes it (see above)."""
    h = hsv[0].float() * torch.tensor(6.0 / 180.0, dtype=torch.float32)
    s = hsv[1].float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    v = hsv[2].float() * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    sector = h.trunc()
    h = h - sector
    # 1 - s * h in one rounding, as OpenCV's loop computes it (a fused multiply-add): the product of two float32 is
    # exact in float64, and over every 8-bit input this gives the fused result (tested against OpenCV)
    s64 = s.double()
    tab = torch.stack([v, v * (1 - s), v * (1 - s64 * h.double()).float(), v * (1 - s64 * (1 - h).double()).float()])
    rgb = tab.gather(0, _SECTORS[:, sector.long()])  # (3, H, W); s = 0 gives v everywhere, as OpenCV's s == 0 case
    return (rgb * 255).to(torch.uint8)  # truncated, as OpenCV's vectorised loop converts


@dataclass(frozen=True)
class PhotometricDraws:
    """The random choices of one PhotoMetricDistortion (None: the step is skipped), drawn in mmseg's order."""

    brightness: float | None = None  # the delta added, in [-32, 32)
    contrast_first: bool = False  # mmseg's mode 1: contrast before the HSV steps, else after them
    contrast: float | None = None  # the factor, in [0.5, 1.5)
    saturation: float | None = None  # the factor, in [0.5, 1.5)
    hue: int | None = None  # the shift in hue steps (2 degrees), an integer in [-18, 18)


def draw_photometric() -> PhotometricDraws:
    """One draw from torch's global generator, each step with probability 1/2, in the order mmseg draws them:
    brightness, the contrast mode, [contrast], saturation, hue, [contrast]."""

    def coin() -> bool:
        return bool(torch.randint(2, ()))

    def uniform(lo: float, hi: float) -> float:
        return float(torch.empty((), dtype=torch.float64).uniform_(lo, hi))

    brightness = uniform(-32, 32) if coin() else None
    contrast_first = coin()
    contrast = uniform(0.5, 1.5) if contrast_first and coin() else None
    saturation = uniform(0.5, 1.5) if coin() else None
    hue = int(torch.randint(-18, 18, ())) if coin() else None  # mmseg: randint(-18, 18), 18 excluded
    if not contrast_first and coin():
        contrast = uniform(0.5, 1.5)
    return PhotometricDraws(brightness, contrast_first, contrast, saturation, hue)


def _convert(x: Tensor, alpha: float = 1.0, beta: float = 0.0) -> Tensor:
    """mmseg's ``convert``: float32 ``x * alpha + beta``, clipped to 0..255, back to uint8 by truncation."""
    return (x.float() * alpha + beta).clamp(0, 255).to(torch.uint8)


def photometric_distortion(image: Tensor, draws: PhotometricDraws | None = None) -> Tensor:
    """mmseg's PhotoMetricDistortion (defaults) on a (3, H, W) RGB image, uint8 after every step as mmcv keeps it:
    brightness (+ delta), contrast (x factor; before or after the HSV steps), saturation (x factor on S) and hue
    (+ shift on H, modulo 180), each HSV step with its own 8-bit RGB -> HSV -> RGB round trip. ``draws``: the random
    choices (default: `draw_photometric`). A float image is rounded to uint8 first; the result is uint8."""
    if image.dtype != torch.uint8:
        image = image.round().clamp(0, 255).to(torch.uint8)
    d = draws if draws is not None else draw_photometric()
    if d.brightness is not None:
        image = _convert(image, beta=d.brightness)
    if d.contrast_first and d.contrast is not None:
        image = _convert(image, alpha=d.contrast)
    if d.saturation is not None:
        hsv = rgb_to_hsv_u8(image)
        hsv[1] = _convert(hsv[1], alpha=d.saturation)
        image = hsv_to_rgb_u8(hsv)
    if d.hue is not None:
        hsv = rgb_to_hsv_u8(image)
        hsv[0] = ((hsv[0].long() + d.hue) % 180).to(torch.uint8)
        image = hsv_to_rgb_u8(hsv)
    if not d.contrast_first and d.contrast is not None:
        image = _convert(image, alpha=d.contrast)
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
        image = image.permute(2, 0, 1)  # (H, W, 3) -> (3, H, W), uint8 until normalised, as mmcv keeps it
        if self.shorts:
            short = self.shorts[int(torch.randint(len(self.shorts), ()))]
            size = short_edge_size(*label.shape, short, self.max_size)
            image, label = resize(image.to(torch.float32, copy=True), label, size)
            # mmcv's resize of a uint8 image gives uint8; rounded in place, the image being a new tensor (a 2048
            # short edge makes it 4096x2048)
            image = image.round_().clamp_(0, 255).to(torch.uint8)
        image, label = random_crop(image, label, self.crop, self.cat_max_ratio)
        if torch.rand(()) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        if self.photometric:
            image = photometric_distortion(image)
        image = normalize(image.float(), self.mean, self.std)
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
