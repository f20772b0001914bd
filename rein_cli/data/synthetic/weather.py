"""The synthetic conditions: a clear `Scene` rendered in fog, at night, in rain or in snow, with the same labels."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from rein_cli.data.registry import SYNTHETIC_CONDITIONS
from rein_cli.data.synthetic.canvas import BUILDING, ROAD, SIDEWALK, SKY, TERRAIN, VEGETATION
from rein_cli.data.synthetic.scene import Scene


def render(scene: Scene, condition: str, rng: np.random.Generator) -> np.ndarray:
    """The scene under ``condition`` as (H, W, 3) uint8."""
    image = RENDERERS[condition](scene, rng)
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)


def _blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Gaussian blur of a float image in [0, 1] (through 8-bit PIL, which is fast)."""
    if radius <= 0:
        return image
    pil = Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8))
    return np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255.0


def clear(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """The scene as it was drawn."""
    return scene.image


def fog(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Koschmieder's law, I = J t + A (1 - t) with transmission t = exp(-beta depth); the sky becomes airlight."""
    visibility = rng.uniform(20, 90)  # metres at which contrast drops to 5 %
    beta = -math.log(0.05) / visibility
    transmission = np.exp(-beta * scene.depth)[..., None]  # (H, W, 1); sky: depth inf -> 0
    airlight = np.float32(rng.uniform(0.7, 0.9)) * rng.uniform(0.97, 1.03, 3).astype(np.float32)
    hazy = scene.image * transmission + airlight * (1 - transmission)
    return _blur(hazy, rng.uniform(0.3, 0.8))


def night(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Reflectance under low ambient light plus the scene's lamps, headlights and lit windows with bloom, then
    sensor gain, shot noise and read noise."""
    h, w = scene.labels.shape
    sh, sw = h // 4, w // 4  # light fields are smooth: compute them at quarter resolution
    ys = (np.arange(sh, dtype=np.float32)[:, None] + 0.5) * h / sh  # (sh, 1)
    xs = (np.arange(sw, dtype=np.float32)[None, :] + 0.5) * w / sw  # (1, sw)
    ambient = np.float32(rng.uniform(0.02, 0.06)) * np.asarray([0.7, 0.8, 1.0], dtype=np.float32)
    light = np.zeros((sh, sw, 3), dtype=np.float32)
    for lamp in scene.lights:
        r = max(lamp.radius, 1.0)
        if lamp.ground:  # a cone of light falling on the ground below and in front of the source
            dy = np.maximum(ys - lamp.y, 0) / (1.5 * r)
            falloff = np.exp(-((xs - lamp.x) ** 2) / (2 * r * r) - dy**2) * (ys > lamp.y)
        else:
            falloff = np.exp(-((xs - lamp.x) ** 2 + (ys - lamp.y) ** 2) / (2 * r * r))
        light += falloff[..., None] * np.asarray(lamp.color, dtype=np.float32)  # (sh, sw, 3)
    light = 1.0 - np.exp(-0.6 * light)  # overlapping pools of light saturate instead of adding up
    light = np.asarray(Image.fromarray((light * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR))  # (H, W, 3)
    lit = scene.image * (ambient + light.astype(np.float32) / 255.0)

    sky = (scene.labels == SKY)[..., None]  # (H, W, 1)
    rows = np.arange(h, dtype=np.float32)[:, None, None]  # (H, 1, 1)
    glow = np.exp(-np.abs(rows - scene.horizon) / (0.2 * h)) * np.asarray([0.10, 0.08, 0.06], dtype=np.float32)
    lit = np.where(sky, np.asarray([0.01, 0.015, 0.04], dtype=np.float32) + glow, lit)

    emissive = scene.emissive[..., None]  # (H, W, 1)
    lit = np.where(emissive, scene.image, lit)
    bloom = _blur(np.where(emissive, scene.image, 0), max(2.0, w / 200))
    lit = lit + 1.5 * bloom

    gain = rng.uniform(1.0, 1.8)  # the camera raises its gain in the dark, amplifying noise
    signal = np.clip(lit * gain, 0, 1)
    shot = rng.standard_normal(signal.shape).astype(np.float32) * np.sqrt(signal * 0.004 * gain)
    read = rng.standard_normal((h, w, 1)).astype(np.float32) * np.float32(0.012 * gain)
    return _blur(signal + shot + read, 0.5)


def rain(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Overcast and duller, wet road and sidewalk reflecting the scene, motion-blurred streaks, haze, lens blur."""
    h, w = scene.labels.shape
    image = scene.image * np.float32(rng.uniform(0.6, 0.8))  # overcast
    image = image * 0.85 + np.float32(0.15) * image.mean(axis=2, keepdims=True)  # duller colours

    wet = np.isin(scene.labels, (ROAD, SIDEWALK))[..., None]  # (H, W, 1)
    top = int(scene.horizon)
    rows = np.clip(2 * top - np.arange(h), 0, h - 1)  # mirror the scene about the horizon
    mirror = _blur(image[rows], 2.0)
    wetness = np.float32(rng.uniform(0.25, 0.5))
    image = np.where(wet, image * (1 - wetness) + mirror * wetness * 0.8, image)

    streaks = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(streaks)
    angle = rng.uniform(-0.35, 0.35)
    count = int(rng.uniform(0.6, 1.6) * w * h / 200)
    x0 = rng.uniform(-0.2 * w, 1.2 * w, count)
    y0 = rng.uniform(-0.1 * h, h, count)
    length = rng.uniform(0.04, 0.12, count) * h
    alpha = rng.integers(40, 110, count)
    for x, y, n, a in zip(x0, y0, length, alpha, strict=True):
        draw.line([(x, y), (x + n * math.sin(angle), y + n * math.cos(angle))], fill=int(a), width=1)
    streaks = streaks.filter(ImageFilter.GaussianBlur(0.7))
    streaks = np.asarray(streaks, dtype=np.float32)[..., None] / 255.0  # (H, W, 1)
    image = image * (1 - streaks) + np.float32(0.8) * streaks

    haze = np.float32(rng.uniform(0.05, 0.15))
    image = image * (1 - haze) + np.float32(0.55) * haze
    return _blur(image, rng.uniform(0.6, 1.3))


def snow(scene: Scene, rng: np.random.Generator) -> np.ndarray:
    """Snow cover on upward-facing surfaces, an overcast sky, a light haze, and flakes in three depth layers."""
    h, w = scene.labels.shape
    labels, inst = scene.labels, scene.instances
    image = scene.image * np.float32(rng.uniform(0.75, 0.95))
    image = image * 0.8 + np.float32(0.2) * image.mean(axis=2, keepdims=True)

    # snow settles where a surface faces up: the ground, and the top few rows of each object
    top_edge = np.zeros_like(labels, dtype=bool)
    depth_px = max(2, h // 80)
    for k in range(1, depth_px + 1):
        top_edge[k:] |= inst[k:] != inst[:-k]
    top_edge &= ~np.isin(labels, (SKY,))
    cover = np.zeros(labels.shape, dtype=np.float32)
    amount = rng.uniform(0.5, 0.95)
    cover[np.isin(labels, (SIDEWALK, TERRAIN))] = amount
    cover[labels == ROAD] = amount * rng.uniform(0.2, 0.6)  # cleared and driven on
    cover[labels == VEGETATION] = amount * 0.5
    cover[top_edge & (labels != ROAD)] = 0.95
    cover[(labels == BUILDING) & ~top_edge] *= 0.0
    grain = rng.random(labels.shape, dtype=np.float32)
    cover = np.clip(cover * (0.7 + 0.6 * grain), 0, 1)[..., None]  # (H, W, 1)
    white = np.asarray([0.92, 0.94, 0.98], dtype=np.float32)
    image = image * (1 - cover) + white * cover

    sky = (labels == SKY)[..., None]  # (H, W, 1)
    image = np.where(sky, np.float32(0.8) + 0.1 * (image - 0.5), image)  # overcast sky
    transmission = np.exp(-scene.depth / rng.uniform(150, 400))[..., None]  # (H, W, 1)
    image = image * transmission + np.float32(0.85) * (1 - transmission)

    for size, blur, count in ((1, 0.0, 1.0), (2, 0.6, 0.35), (4, 1.5, 0.08)):  # far, mid, near flakes
        layer = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(layer)
        n = int(count * rng.uniform(0.5, 1.5) * w * h / 300)
        for x, y in zip(rng.uniform(0, w, n), rng.uniform(0, h, n), strict=True):
            draw.ellipse([x - size / 2, y - size / 2, x + size / 2, y + size / 2], fill=230)
        if blur:
            layer = layer.filter(ImageFilter.GaussianBlur(blur))
        flakes = np.asarray(layer, dtype=np.float32)[..., None] / 255.0  # (H, W, 1)
        image = image * (1 - flakes) + flakes
    return image


# one renderer per condition, in the registry's order (a test checks that each key names its function)
RENDERERS = dict(zip(SYNTHETIC_CONDITIONS, (clear, fog, night, rain, snow), strict=True))
