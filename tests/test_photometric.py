"""PhotoMetricDistortion as mmseg computes it: uint8 after every step, each HSV step through OpenCV's 8-bit
conversions. A reference written here from mmseg's definition (numpy, and OpenCV for the colour conversions, as
mmcv's bgr2hsv / hsv2bgr call it) is run with the same fixed draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rein_cli.data.transforms import (
    PhotometricDraws,
    TrainTransform,
    draw_photometric,
    hsv_to_rgb_u8,
    photometric_distortion,
    rgb_to_hsv_u8,
)

cv2 = pytest.importorskip("cv2")  # the test extra installs OpenCV; training never needs it


def mmseg_photometric(bgr: np.ndarray, d: PhotometricDraws) -> np.ndarray:
    """mmseg's PhotoMetricDistortion.transform on a BGR uint8 (H, W, 3) image with the draws ``d``."""

    def convert(img, alpha=1, beta=0):
        img = img.astype(np.float32) * alpha + beta
        return np.clip(img, 0, 255).astype(np.uint8)

    img = bgr
    if d.brightness is not None:
        img = convert(img, beta=d.brightness)
    mode = 1 if d.contrast_first else 0
    if mode == 1 and d.contrast is not None:
        img = convert(img, alpha=d.contrast)
    if d.saturation is not None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 1] = convert(img[:, :, 1], alpha=d.saturation)
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if d.hue is not None:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        img[:, :, 0] = (img[:, :, 0].astype(int) + d.hue) % 180
        img = cv2.cvtColor(img, cv2.COLOR_HSV2BGR)
    if mode == 0 and d.contrast is not None:
        img = convert(img, alpha=d.contrast)
    return img


def image(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    """RGB uint8 (H, W, 3): random colours, a grey band (no saturation), pure and dark colours. A width that is a
    multiple of 64 keeps every pixel in OpenCV's vectorised loop on any CPU (the last width % (4 x lanes) pixels of
    a row it rounds instead of truncating)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    img[:4] = rng.integers(0, 256, (4, width, 1), dtype=np.uint8)  # greys
    img[4, :6] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [1, 2, 3]]
    return img


DRAWS = [
    PhotometricDraws(brightness=17.3),
    PhotometricDraws(brightness=-31.9),  # clipped at 0
    PhotometricDraws(contrast=1.4993, contrast_first=True),  # clipped at 255
    PhotometricDraws(contrast=0.5004),
    PhotometricDraws(saturation=1.49),
    PhotometricDraws(saturation=0.51),
    PhotometricDraws(hue=-18),
    PhotometricDraws(hue=17),
    PhotometricDraws(brightness=5.5, contrast_first=True, contrast=1.21, saturation=0.77, hue=9),
    PhotometricDraws(brightness=-12.25, contrast_first=False, contrast=0.83, saturation=1.31, hue=-7),
    PhotometricDraws(contrast_first=False, saturation=1.2, hue=3),
    PhotometricDraws(),  # nothing drawn: the image unchanged
]


@pytest.mark.parametrize("index", range(len(DRAWS)))
def test_each_step_and_order_matches_mmsegs_definition_exactly(index):
    draws = DRAWS[index]
    for seed in range(3):
        rgb = image(seed)
        expected = mmseg_photometric(np.ascontiguousarray(rgb[..., ::-1]), draws)[..., ::-1]  # mmcv works in BGR
        ours = photometric_distortion(torch.from_numpy(rgb).permute(2, 0, 1), draws)
        assert ours.dtype == torch.uint8
        np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), expected)
    if draws == PhotometricDraws():
        assert torch.equal(
            photometric_distortion(torch.from_numpy(rgb).permute(2, 0, 1), draws).permute(1, 2, 0),
            torch.from_numpy(rgb),
        )


def test_rounding_after_each_step_is_what_differs_from_float_arithmetic():
    rgb = torch.from_numpy(image(5)).permute(2, 0, 1)
    draws = PhotometricDraws(brightness=0.6, contrast_first=True, contrast=1.01)
    ours = photometric_distortion(rgb, draws)
    floats = ((rgb.float() + 0.6).clamp(0, 255) * 1.01).clamp(0, 255)  # the same steps without uint8 between them
    assert not torch.equal(ours, floats.to(torch.uint8))  # truncating after the brightness step changes the result
    assert torch.equal(ours, ((rgb.float() + 0.6).clamp(0, 255).to(torch.uint8).float() * 1.01).clamp(0, 255).byte())


def test_the_colour_conversions_are_opencvs_8_bit_ones():
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(np.arange(256), np.arange(256), indexing="ij"), -1).reshape(256, 256, 2)
    for third in (0, 1, 2, 85, 127, 128, 200, 254, 255):  # every pair of two channels, with the third fixed
        for order in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
            rgb = np.concatenate([grid, np.full((256, 256, 1), third)], -1)[..., order].astype(np.uint8)
            ours = rgb_to_hsv_u8(torch.from_numpy(rgb).permute(2, 0, 1)).permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(ours, cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV))
    hsv = np.stack(np.meshgrid(np.arange(180), np.arange(256), indexing="ij"), -1)  # every hue and saturation
    for value in (0, 1, 2, 3, 85, 127, 128, 200, 254, 255):
        full = np.concatenate([hsv, np.full((180, 256, 1), value)], -1).astype(np.uint8)
        ours = hsv_to_rgb_u8(torch.from_numpy(full).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(ours, cv2.cvtColor(full, cv2.COLOR_HSV2RGB))
    sample = np.stack([rng.integers(0, 180, (512, 256)), *rng.integers(0, 256, (2, 512, 256))], -1).astype(np.uint8)
    ours = hsv_to_rgb_u8(torch.from_numpy(sample).permute(2, 0, 1)).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, cv2.cvtColor(sample, cv2.COLOR_HSV2RGB))


def test_the_draws_follow_mmsegs_probabilities_and_ranges():
    torch.manual_seed(0)
    draws = [draw_photometric() for _ in range(2000)]
    for name in ("brightness", "contrast", "saturation", "hue"):
        share = np.mean([getattr(d, name) is not None for d in draws])
        assert 0.45 < share < 0.55, name  # each step with probability 1/2
    assert 0.45 < np.mean([d.contrast_first for d in draws]) < 0.55
    assert all(-32 <= d.brightness < 32 for d in draws if d.brightness is not None)
    assert all(0.5 <= d.contrast < 1.5 and 0.5 <= d.saturation < 1.5 for d in draws if d.contrast and d.saturation)
    hues = {d.hue for d in draws if d.hue is not None}
    assert hues == set(range(-18, 18))  # mmseg's randint(-18, 18): an integer, 18 never drawn


def test_the_training_transform_keeps_the_image_uint8_until_it_normalises():
    rgb, label = torch.from_numpy(image(1, 64, 96)), torch.zeros(64, 96, dtype=torch.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    transform = TrainTransform(48, mean, std, resize_ratios=[1.37], cat_max_ratio=1.0)  # a resize, then the rest
    for seed in range(6):
        torch.manual_seed(seed)
        x, _ = transform(rgb, label)
        pixels = x * torch.tensor(std).view(3, 1, 1) * 255 + torch.tensor(mean).view(3, 1, 1) * 255
        torch.testing.assert_close(pixels, pixels.round(), rtol=0, atol=1e-3)  # integer values 0..255
        assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
