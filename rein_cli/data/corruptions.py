"""The 15 common corruptions of Hendrycks & Dietterich (ImageNet-C), as the `imagecorruptions` package (1.1.2) applies
them to images of any size: the protocol of Cityscapes-C and of Rein's robustness figure.

Our own implementation of the same formulas, constants and operations (docs/evaluation.md, "Corruption
robustness"): the library itself needs the GUI build of OpenCV and a scikit-image argument that no longer exists.
Each function takes an (H, W, 3) uint8 RGB array and a ``numpy.random.RandomState`` and returns an (H, W, 3) uint8
array; every random draw comes from that generator, in the library's order, so that the library run after
``np.random.seed(k)`` and ours given ``RandomState(k)`` draw the same numbers (benchmarks/corruption_reference.py,
tests/test_corruptions.py). `corrupt` seeds the generator from the image's identity, the corruption and the
severity (`corruption_seed`). OpenCV (``pip install 'rein-cli[corruptions]'``) is needed by the blur, snow and frost
corruptions; frost's six overlay images are downloaded once into ``$REIN_HOME/corruptions/frost`` (`frost_images`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from rein_cli.config import rein_home
from rein_cli.errors import ReinError
from rein_cli.fetch import fetch

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
SEVERITIES = (1, 2, 3, 4, 5)
SLOW = ("glass_blur", "zoom_blur", "elastic_transform")  # cached under $REIN_HOME/corruptions/cache by `corrupt_file`
NEED_OPENCV = {"defocus_blur", "snow", "frost"}
VERSION = 1  # part of every seed and cache key: bump when an output changes

# The frost overlays of imagecorruptions 1.1.2: its repository at the tag v1.1.2 (the same bytes as in its wheel).
FROST_COMMIT = "d03ee68843a9be8fda4c94a9ad8aad767a3f437e"
FROST_BASE = f"https://raw.githubusercontent.com/bethgelab/imagecorruptions/{FROST_COMMIT}/imagecorruptions/frost"
FROST_FILES = (
    ("frost1.png", 1199930, "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755"),
    ("frost2.png", 299002, "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137"),
    ("frost3.png", 299002, "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504"),
    ("frost4.jpg", 36734, "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e"),
    ("frost5.jpg", 155150, "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2"),
    ("frost6.jpg", 90185, "1f92b2f48408748085b68dd81d816ef239f42cef3029c25d041fcb6760fb4f25"),
)


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as err:
        raise ReinError(
            "the blur, snow and frost corruptions need OpenCV, which is not installed; install it with: "
            "pip install 'rein-cli[corruptions]' (or pip install opencv-python-headless)"
        ) from err
    return cv2


# ---------------------------------------------------------------------------------------------------- the spec


def parse_spec(spec: str) -> list[tuple[str, int]]:
    """``all`` (15 x severities 1-5), a name (its 5 severities), ``name:3``, or a comma list of these -> the
    (corruption, severity) pairs in the order given, each once."""
    pairs: list[tuple[str, int]] = []
    parts = [p.strip() for p in str(spec).split(",")]
    if not any(parts):
        raise ReinError(f"--corruption {spec!r} names no corruption; {_valid()}")
    for part in parts:
        if not part:
            continue
        name, _, level = part.partition(":")
        name = name.strip().lower().replace("-", "_")
        names = list(CORRUPTIONS) if name == "all" else [name]
        if name != "all" and name not in CORRUPTIONS:
            raise ReinError(f"unknown corruption {name!r} in --corruption {spec!r}; {_valid()}")
        if level.strip():
            if not level.strip().isdigit() or int(level) not in SEVERITIES:
                raise ReinError(f"unknown severity {level.strip()!r} in --corruption {spec!r}; {_valid()}")
            levels = [int(level)]
        else:
            levels = list(SEVERITIES)
        pairs += [(n, s) for n in names for s in levels if (n, s) not in pairs]
    return pairs


def _valid() -> str:
    return (
        f"valid: all, a name, or name:severity (severities 1-5), comma-separated; the names: {', '.join(CORRUPTIONS)}"
    )


def corruption_seed(identity: str, name: str, severity: int) -> int:
    """The seed of an image's corruption: the first 4 bytes (little-endian) of the SHA-256 of
    ``"rein-corruption-v1\\0<identity>\\0<name>\\0<severity>"``; the identity is the image's path relative to its
    dataset's folder (the same wherever the dataset lies)."""
    text = f"rein-corruption-v{VERSION}\0{identity}\0{name}\0{int(severity)}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")


def corrupt(
    image: np.ndarray,
    name: str,
    severity: int,
    *,
    identity: str | None = None,
    rng: np.random.RandomState | None = None,
) -> np.ndarray:
    """``image`` (H, W, 3) uint8 RGB, corrupted by ``name`` at ``severity`` (1-5); the same shape and dtype.
    The random draws come from ``rng``, else from ``RandomState(corruption_seed(identity, name, severity))``."""
    if name not in CORRUPTIONS:
        raise ReinError(f"unknown corruption {name!r}; {_valid()}")
    if severity not in SEVERITIES:
        raise ReinError(f"unknown severity {severity!r} of {name}; {_valid()}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ReinError(f"corruptions take (H, W, 3) uint8 images, not {image.dtype} {tuple(image.shape)}")
    if rng is None:
        if identity is None:
            raise ReinError("corrupt() needs the image's identity (for its seed) or a random generator")
        rng = np.random.RandomState(corruption_seed(identity, name, severity))
    out = _FUNCTIONS[name](image, severity, rng)
    return np.asarray(out).astype(np.uint8)  # floats truncated, as the library's np.uint8(...)


def corrupt_file(
    image: np.ndarray, name: str, severity: int, *, identity: str, source: Path, cache: Path | None = None
) -> np.ndarray:
    """`corrupt` with the slow corruptions (`SLOW`) cached as PNGs under ``cache`` (default
    ``$REIN_HOME/corruptions/cache``), keyed by the source file (resolved path, size, modification time), the
    identity, the corruption, the severity and `VERSION`; an unreadable or unwritable cache only costs the time."""
    if name not in SLOW:
        return corrupt(image, name, severity, identity=identity)
    try:
        stat = Path(source).stat()
        key = (
            f"{os.path.realpath(source)}\0{stat.st_size}\0{stat.st_mtime_ns}\0{identity}\0{name}\0{severity}\0{VERSION}"
        )
    except OSError:
        return corrupt(image, name, severity, identity=identity)
    digest = hashlib.sha256(key.encode()).hexdigest()
    path = Path(cache if cache is not None else rein_home() / "corruptions" / "cache") / name / f"{digest}.png"
    if path.is_file():
        try:
            with Image.open(path) as cached:
                array = np.asarray(cached.convert("RGB"))
            if array.shape == image.shape:
                return array
        except (OSError, ValueError):
            pass  # a damaged entry: computed and written again
    out = corrupt(image, name, severity, identity=identity)
    try:
        from rein_cli.io import save_image

        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(path, out, compress_level=1)
    except (OSError, ReinError):
        pass
    return out


def prepare(pairs: Sequence[tuple[str, int]], *, progress: bool = False) -> None:
    """What ``pairs`` need, before any image is read: OpenCV for the blur, snow and frost corruptions, and frost's
    overlays downloaded (call it in one process first when several share ``$REIN_HOME``)."""
    names = {name for name, _ in pairs}
    if names & NEED_OPENCV:
        _cv2()
    if "frost" in names:
        frost_images(progress=progress)


# ---------------------------------------------------------------------------------------------------- helpers


def _gaussian(x: np.ndarray, sigma: float | np.ndarray, *, channels: bool, mode: str = "nearest", truncate=4.0):
    """scikit-image's ``filters.gaussian`` on a float image (channels, if any, last and never mixed)."""
    if channels:
        sigma = [sigma, sigma, 0]
    return ndimage.gaussian_filter(x, sigma, mode=mode, truncate=truncate)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    cv2 = _cv2()
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
    cv2 = _cv2()
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
    cv2 = _cv2()
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


def frost(
    x: np.ndarray, severity: int, rng: np.random.RandomState, *, overlays: Sequence[Path] | None = None
) -> np.ndarray:
    """``overlays``: the six frost images (default: `frost_images`, downloaded once)."""
    cv2 = _cv2()
    c = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    idx = rng.randint(5)  # frost6 is never drawn, as in the library
    path = (overlays or frost_images())[idx]
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


_FUNCTIONS: dict[str, Callable[[np.ndarray, int, np.random.RandomState], np.ndarray]] = {
    name: globals()[name] for name in CORRUPTIONS
}


# ---------------------------------------------------------------------------------------------------- frost files


_checked: dict[tuple, list[Path]] = {}  # the overlays checked in this process


def frost_images(
    folder: Path | None = None,
    *,
    base_url: str | None = None,
    files: Sequence[tuple[str, int, str]] = FROST_FILES,
    progress: bool = False,
) -> list[Path]:
    """The six frost overlays, downloaded once into ``folder`` (default ``$REIN_HOME/corruptions/frost``) from
    imagecorruptions' repository at a pinned commit (``base_url``, else ``$REIN_FROST_URL``: another place with the
    same files), each checked against its size and SHA-256 (``files``: name, size, SHA-256); files already there
    are only checked, once per process. A mismatch is an error and nothing unchecked is kept."""
    folder = Path(folder) if folder is not None else rein_home() / "corruptions" / "frost"
    base = (base_url or os.environ.get("REIN_FROST_URL") or FROST_BASE).rstrip("/")
    key = (str(folder), tuple(files))
    if key not in _checked:
        _checked[key] = [
            fetch(f"{base}/{name}", folder / name, size=size, sha256=sha256, progress=progress).path
            for name, size, sha256 in files
        ]
    return _checked[key]
