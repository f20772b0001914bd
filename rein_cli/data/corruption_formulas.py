"""The formulas of the 15 ImageNet-C corruptions, as imagecorruptions 1.1.2 computes them: each takes an (H, W, 3) uint8
RGB array, a severity (1-5) and a ``numpy.random.RandomState``, draws from it in the library's order and returns the
corrupted image as floats (`rein_cli.data.corruptions` seeds, dispatches, caches and rounds)."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from rein_cli.errors import ReinError


def opencv() -> Any:
    """The cv2 module; an error saying how to install it when it is missing (the blur, snow and frost need it)."""
    try:
        import cv2
    except ImportError as err:
        raise ReinError(
            "the blur, snow and frost corruptions need OpenCV, which is not installed; install it with: "
            "pip install 'rein-cli[corruptions]' (or pip install opencv-python-headless)"
        ) from err
    return cv2


# ---------------------------------------------------------------------------------------------------- helpers


def _gaussian(x: np.ndarray, sigma: float | np.ndarray, *, channels: bool, mode: str = "nearest", truncate=4.0):
    """scikit-image's ``filters.gaussian`` on a float image (channels, if any, last and never mixed)."""
    if channels:
        sigma = [sigma, sigma, 0]
    return ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    cv2 = opencv()
    if radius <= 8:
        L, ksize = np.arange(-8, 8 + 1), (3, 3)
    else:
        L, ksize = np.arange(-radius, radius + 1), (5, 5)
    X, Y = np.meshgrid(L, L)
    aliased = np.array(radius**2 >= (X**2 + Y**2), dtype=np.float32)
    aliased /= np.sum(aliased)
    return cv2.GaussianBlur(aliased, ksize=ksize, sigmaX=alias_blur)


def _plasma_fractal(rng: np.random.RandomState, mapsize: int, wibbledecay: float) -> np.ndarray:
    """The diamond-square height map in [0, 1] (``mapsize`` a power of two)."""
    maparray = np.empty((mapsize, mapsize), dtype=np.float64)
    maparray[0, 0] = 0
    stepsize = mapsize
    wibble = 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corners = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        squares = corners + np.roll(corners, shift=-1, axis=0)
        squares += np.roll(squares, shift=-1, axis=1)
        maparray[half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(squares)
        dr = maparray[half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=0) + (ul + np.roll(ul, -1, axis=1))
        maparray[0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=1) + (ul + np.roll(ul, -1, axis=0))
        maparray[half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min()
    return maparray / maparray.max()


def _clipped_zoom(img: np.ndarray, zoom_factor: float) -> np.ndarray:
    ch0 = int(np.ceil(img.shape[0] / float(zoom_factor)))
    top0 = (img.shape[0] - ch0) // 2
    ch1 = int(np.ceil(img.shape[1] / float(zoom_factor)))
    top1 = (img.shape[1] - ch1) // 2
    return ndimage.zoom(img[top0 : top0 + ch0, top1 : top1 + ch1], (zoom_factor, zoom_factor, 1), order=1)


def _shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Shift by (dx, dy), repeating the edge pixels into the vacated border."""
    if dx < 0:
        shifted = np.roll(image, shift=image.shape[1] + dx, axis=1)
        shifted[:, dx:] = shifted[:, dx - 1 : dx]
    elif dx > 0:
        shifted = np.roll(image, shift=dx, axis=1)
        shifted[:, :dx] = shifted[:, dx : dx + 1]
    else:
        shifted = image
    if dy < 0:
        shifted = np.roll(shifted, shift=image.shape[0] + dy, axis=0)
        shifted[dy:, :] = shifted[dy - 1 : dy, :]
    elif dy > 0:
        shifted = np.roll(shifted, shift=dy, axis=0)
        shifted[:dy, :] = shifted[dy : dy + 1, :]
    return shifted


def _motion_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    width = radius * 2 + 1
    # the C library's exp, element by element: numpy's vectorised exp differs from it in the last bit for some of
    # these values in some numpy versions, which moves a few output pixels by one grey level
    gauss = np.array([math.exp(-(i**2) / (2 * sigma**2)) for i in range(width)])
    kernel = gauss / (np.sqrt(2 * np.pi) * sigma)
    kernel = kernel / np.sum(kernel)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if np.abs(dy) >= x.shape[0] or np.abs(dx) >= x.shape[1]:
            break  # the motion passed the image's border
        blurred = blurred + kernel[i] * _shift(x, dx, dy)
    return blurred


def _rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """scikit-image's ``color.rgb2hsv`` on a float (H, W, 3) image."""
    out = np.empty_like(rgb)
    v = rgb.max(-1)
    delta = np.ptp(rgb, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        s[delta == 0.0] = 0.0
        for channel, offset, a, b in ((0, 0.0, 1, 2), (1, 2.0, 2, 0), (2, 4.0, 0, 1)):
            idx = rgb[..., channel] == v
            out[idx, 0] = offset + (rgb[idx, a] - rgb[idx, b]) / delta[idx]
        h = (out[..., 0] / 6.0) % 1.0
        h[delta == 0.0] = 0.0
    out[..., 0], out[..., 1], out[..., 2] = h, s, v
    out[np.isnan(out)] = 0
    return out


def _hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """scikit-image's ``color.hsv2rgb`` on a float (H, W, 3) image."""
    hi = np.floor(hsv[..., 0] * 6)
    f = hsv[..., 0] * 6 - hi
    p = hsv[..., 2] * (1 - hsv[..., 1])
    q = hsv[..., 2] * (1 - f * hsv[..., 1])
    t = hsv[..., 2] * (1 - (1 - f) * hsv[..., 1])
    v = hsv[..., 2]
    hi = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    return np.choose(
        hi,
        np.stack(
            [
                np.stack((v, t, p), axis=-1),
                np.stack((q, v, p), axis=-1),
                np.stack((p, v, t), axis=-1),
                np.stack((p, q, v), axis=-1),
                np.stack((t, p, v), axis=-1),
                np.stack((v, p, q), axis=-1),
            ]
        ),
    )


def _glass_shuffle(x: np.ndarray, max_delta: int, iterations: int, rng: np.random.RandomState) -> np.ndarray:
    """The library's local pixel "swap", which is in fact a copy: its ``x[h, w], x[h', w'] = x[h', w'], x[h, w]``
    on numpy rows writes (h', w')'s pixel to (h, w) and then that same pixel back to (h', w'). Done on a flat index
    map in the same order with the same draws (all drawn at once: the same stream), then applied once."""
    H, W = x.shape[:2]
    hs = range(H - max_delta, max_delta, -1)
    ws = range(W - max_delta, max_delta, -1)
    index = list(range(H * W))
    for _ in range(iterations):
        n = len(hs) * len(ws)
        if n <= 0:
            continue
        draws = rng.randint(-max_delta, max_delta, size=(n, 2))  # (dx, dy) per pixel, in the loop's order
        targets = (np.repeat(np.asarray(hs), len(ws)) * W + np.tile(np.asarray(ws), len(hs))).tolist()
        sources = (np.asarray(targets) + draws[:, 1] * W + draws[:, 0]).tolist()
        for target, source in zip(targets, sources, strict=True):
            index[target] = index[source]
    flat = x.reshape(H * W, -1)
    return flat[np.asarray(index)].reshape(x.shape)


# ---------------------------------------------------------------------------------------------------- corruptions


def gaussian_noise(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [0.08, 0.12, 0.18, 0.26, 0.38][severity - 1]
    x = np.array(x) / 255.0
    return np.clip(x + rng.normal(size=x.shape, scale=c), 0, 1) * 255


def shot_noise(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [60, 25, 12, 5, 3][severity - 1]
    x = np.array(x) / 255.0
    return np.clip(rng.poisson(x * c) / float(c), 0, 1) * 255


def impulse_noise(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """scikit-image's ``random_noise(mode='s&p', amount=c)``: salt or pepper (half each) with probability c."""
    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    x = np.array(x) / 255.0
    flipped = rng.random_sample(x.shape) <= c
    salted = rng.random_sample(x.shape) <= 0.5
    out = x.copy()
    out[flipped & salted] = 1
    out[flipped & ~salted] = 0
    return np.clip(np.clip(out, 0, 1.0), 0, 1) * 255


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    cv2 = opencv()
    c = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    x = np.array(x) / 255.0
    kernel = _disk(radius=c[0], alias_blur=c[1])
    channels = np.array([cv2.filter2D(x[:, :, d], -1, kernel) for d in range(3)]).transpose((1, 2, 0))
    return np.clip(channels, 0, 1) * 255


def glass_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    sigma, max_delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)][severity - 1]
    x = np.uint8(_gaussian(np.array(x) / 255.0, sigma, channels=True) * 255)
    x = _glass_shuffle(x, max_delta, iterations, rng)
    return np.clip(_gaussian(x / 255.0, sigma, channels=True), 0, 1) * 255


def motion_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    angle = rng.uniform(-45, 45)
    return np.clip(_motion_blur(np.array(x), radius=radius, sigma=sigma, angle=angle), 0, 255)


def zoom_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [
        np.arange(1, 1.11, 0.01),
        np.arange(1, 1.16, 0.01),
        np.arange(1, 1.21, 0.02),
        np.arange(1, 1.26, 0.02),
        np.arange(1, 1.31, 0.03),
    ][severity - 1]
    x = (np.array(x) / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for zoom_factor in c:
        layer = _clipped_zoom(x, zoom_factor)[: x.shape[0], : x.shape[1], :]
        out[: layer.shape[0], : layer.shape[1]] += layer
    x = (x + out) / (len(c) + 1)
    return np.clip(x, 0, 1) * 255


def snow(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    cv2 = opencv()
    c = [
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ][severity - 1]
    x = np.array(x, dtype=np.float32) / 255.0
    layer = rng.normal(size=x.shape[:2], loc=c[0], scale=c[1])
    layer = _clipped_zoom(layer[..., np.newaxis], c[2])
    layer[layer < c[3]] = 0
    layer = np.clip(layer.squeeze(), 0, 1)
    layer = _motion_blur(layer, radius=c[4], sigma=c[5], angle=rng.uniform(-135, -45))
    layer = np.round(layer * 255).astype(np.uint8) / 255.0  # rounded, then cropped to the image
    layer = layer[..., np.newaxis][: x.shape[0], : x.shape[1], :]
    gray = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).reshape(x.shape[0], x.shape[1], 1)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    if layer.shape[:2] != x.shape[:2]:  # the library's fallback for a zoomed layer smaller than the image
        x[: layer.shape[0], : layer.shape[1]] += layer + np.rot90(layer, k=2)
        return np.clip(x, 0, 1) * 255
    return np.clip(x + layer + np.rot90(layer, k=2), 0, 1) * 255


def frost(x: np.ndarray, severity: int, rng: np.random.RandomState, *, overlays: Sequence[Path]) -> np.ndarray:
    """``overlays``: the six frost images (`rein_cli.data.corruptions.frost_images`)."""
    cv2 = opencv()
    c = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    idx = rng.randint(5)  # frost6 is never drawn, as in the library
    path = overlays[idx]
    overlay = cv2.imread(str(path))  # BGR, alpha dropped
    if overlay is None:
        raise ReinError(f"cannot read the frost image {path}; delete it and rerun to download it again")
    fh, fw = overlay.shape[:2]
    H, W = x.shape[:2]
    if fh >= H and fw >= W:
        scaling = 1
    elif fh < H and fw >= W:
        scaling = H / fh
    elif fh >= H and fw < W:
        scaling = W / fw
    else:
        scaling = np.maximum(H / fh, W / fw)
    scaling *= 1.1
    size = (int(np.ceil(fw * scaling)), int(np.ceil(fh * scaling)))
    overlay = cv2.resize(overlay, dsize=size, interpolation=cv2.INTER_CUBIC)
    top, left = rng.randint(0, overlay.shape[0] - H), rng.randint(0, overlay.shape[1] - W)
    overlay = overlay[top : top + H, left : left + W][..., [2, 1, 0]]
    return np.clip(c[0] * np.array(x) + c[1] * overlay, 0, 255)


def fog(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][severity - 1]
    shape = np.array(x).shape
    size = int(np.max(shape))
    map_size = 1 if size == 0 else 2 ** (size - 1).bit_length()
    x = np.array(x) / 255.0
    max_val = x.max()
    x += c[0] * _plasma_fractal(rng, map_size, c[1])[: shape[0], : shape[1]][..., np.newaxis]
    return np.clip(x * max_val / (max_val + c[0]), 0, 1) * 255


def brightness(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1]
    x = _rgb2hsv(np.array(x) / 255.0)
    x[:, :, 2] = np.clip(x[:, :, 2] + c, 0, 1)
    return np.clip(_hsv2rgb(x), 0, 1) * 255


def contrast(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    x = np.array(x) / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return np.clip((x - means) * c + means, 0, 1) * 255


def elastic_transform(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    image = np.array(x, dtype=np.float32) / 255.0
    shape = image.shape
    sigma = np.array(shape[:2]) * 0.01
    alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][severity - 1]
    max_d = shape[0] * 0.005
    noise = rng.uniform(-max_d, max_d, size=shape[:2])
    dx = (_gaussian(noise, sigma, channels=False, mode="reflect", truncate=3) * alpha).astype(np.float32)
    noise = rng.uniform(-max_d, max_d, size=shape[:2])
    dy = (_gaussian(noise, sigma, channels=False, mode="reflect", truncate=3) * alpha).astype(np.float32)
    dx, dy = dx[..., np.newaxis], dy[..., np.newaxis]
    gx, gy, gz = np.meshgrid(np.arange(shape[1]), np.arange(shape[0]), np.arange(shape[2]))
    indices = np.reshape(gy + dy, (-1, 1)), np.reshape(gx + dx, (-1, 1)), np.reshape(gz, (-1, 1))
    return np.clip(ndimage.map_coordinates(image, indices, order=1, mode="reflect").reshape(shape), 0, 1) * 255


def pixelate(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    H, W = x.shape[:2]
    image = Image.fromarray(x).resize((max(1, int(W * c)), max(1, int(H * c))), Image.BOX)  # >= 1: tiny images
    return np.asarray(image.resize((W, H), Image.NEAREST))


def jpeg_compression(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = [25, 18, 15, 10, 7][severity - 1]
    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=c)
    with Image.open(buffer) as image:
        return np.asarray(image)
