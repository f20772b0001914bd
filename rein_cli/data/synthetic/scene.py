"""One synthetic street scene: ground, props drawn far to near, colours, depth, and the `Scene` that holds them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from rein_cli.data.synthetic.canvas import GROUND, ROAD, SIDE, SIDEWALK, TERRAIN, Canvas, Light
from rein_cli.data.synthetic.props import backdrop, buildings, roadside, traffic


@dataclass
class Scene:
    """Everything a condition renderer needs. Arrays are (H, W) unless stated."""

    instances: np.ndarray  # int32 instance ids
    labels: np.ndarray  # uint8 train ids
    image: np.ndarray  # (H, W, 3) float32 clear-weather RGB in [0, 1]
    depth: np.ndarray  # float32 metres, inf for sky
    emissive: np.ndarray  # bool, pixels that glow at night (lamps, lit windows, vehicle and traffic lights)
    horizon: float
    lights: list[Light] = field(default_factory=list)


def make_scene(rng: np.random.Generator, width: int = 512, height: int = 256) -> Scene:
    """Lay out one random street in 3-D, draw it far to near into an instance map, and colour it.

    The label map is a lookup of the same instance map, so image and label are aligned by construction.
    """
    c = Canvas(width, height, rng)
    road_half = rng.uniform(3.5, 7.5)
    walk = rng.uniform(1.8, 4.0)
    verge = [rng.choice([0.0, rng.uniform(1.0, 5.0)], p=[0.5, 0.5]) for _ in range(2)]  # terrain beyond the walk
    c.lay_ground(_ground(c, road_half, walk, verge))

    drawings = backdrop(c)
    edge = road_half + walk
    for side in (-1, 1):
        drawings += buildings(c, side, edge + verge[(side + 1) // 2])
        drawings += roadside(c, side, road_half, edge)
    drawings += traffic(c, road_half)
    for drawing in sorted(drawings, key=lambda d: (d.layer, -d.depth)):  # stable: equal keys keep the list order
        drawing.draw()
    return _shade(c, c.instance_map())


def _ground(c: Canvas, road_half: float, walk: float, verge: list[float]) -> np.ndarray:
    """Sky above the horizon; road, markings, curbs, sidewalks and terrain below, per pixel: (H, W) int32 ids."""
    rng = c.rng
    ids = np.full((c.h, c.w), c.sky, dtype=np.int32)
    top = math.floor(c.horizon) + 1
    if top >= c.h:
        return ids
    v = np.arange(top, c.h, dtype=np.float32)[:, None] + 0.5  # (rows, 1) pixel centres below the horizon
    u = np.arange(c.w, dtype=np.float32)[None, :] + 0.5  # (1, W)
    z = c.f * c.cam_h / (v - c.horizon)  # (rows, 1) depth of the ground at each row
    x = c.cam_x + (u - c.cx) * z / c.f  # (rows, W) lateral position
    ax = np.abs(x)

    asphalt = c.jitter((0.36, 0.36, 0.38), 0.03)
    road = c.add(ROAD, asphalt, 0.10, GROUND)
    marking = c.add(ROAD, c.jitter((0.88, 0.88, 0.85), 0.02), 0.05, GROUND)
    patch = c.add(ROAD, np.asarray(asphalt) * rng.uniform(0.75, 0.9), 0.10, GROUND)
    walk_id = c.add(SIDEWALK, c.jitter((0.62, 0.58, 0.55), 0.05), 0.12, GROUND)
    curb = c.add(SIDEWALK, c.jitter((0.72, 0.72, 0.7), 0.03), 0.05, GROUND)
    grass = c.add(TERRAIN, c.jitter((0.42, 0.55, 0.25), 0.05), 0.25, GROUND)

    out = np.full(x.shape, grass, dtype=np.int32)  # (rows, W)
    out[ax < road_half + walk] = walk_id
    out[(ax >= road_half) & (ax < road_half + 0.25)] = curb
    on_road = ax < road_half
    out[on_road] = road
    # asphalt patches: large-scale noise thresholded in world coordinates
    patches = np.sin(x * 0.7 + rng.uniform(0, 6)) * np.sin(z * 0.15 + rng.uniform(0, 6)) > 0.75
    out[on_road & patches] = patch
    lanes = max(1, round(2 * road_half / 3.3))
    phase = rng.uniform(0, 9)
    for k in range(1, lanes):
        lx = -road_half + k * 2 * road_half / lanes
        out[on_road & (np.abs(x - lx) < 0.08) & ((z + phase) % 9 < 3.5)] = marking
    for sx in (-1, 1):
        out[on_road & (np.abs(x - sx * (road_half - 0.3)) < 0.08)] = marking
    if rng.random() < 0.35:  # a zebra crossing
        z0 = rng.uniform(8, 25)
        out[on_road & (z > z0) & (z < z0 + 4) & ((x % 1.0) < 0.5)] = marking
    ids[top:] = out
    return ids


@lru_cache(maxsize=4)
def _noise_fields(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed fine-grain and large-scale noise, (2H, 2W) each, sampled at random offsets per scene."""
    rng = np.random.default_rng(12345)
    fine = rng.standard_normal((2 * height, 2 * width)).astype(np.float32)
    coarse = rng.standard_normal((2 * height // 16 + 1, 2 * width // 16 + 1)).astype(np.float32)
    coarse = np.asarray(Image.fromarray(coarse).resize((2 * width, 2 * height), Image.BICUBIC))
    return fine, coarse / max(float(np.abs(coarse).max()), 1e-6)


def _shade(c: Canvas, ids: np.ndarray) -> Scene:
    """Colour the instance map: base colour x (1 + texture x fine noise) x large-scale light, a sky with clouds."""
    rng, h, w = c.rng, c.h, c.w
    classes = np.asarray(c.classes, dtype=np.uint8)
    colors = np.asarray(c.colors, dtype=np.float32)  # (instances, 3)
    texture = np.asarray(c.texture, dtype=np.float32)
    fine, coarse = _noise_fields(h, w)
    oy, ox = rng.integers(0, h), rng.integers(0, w)
    grain = fine[oy : oy + h, ox : ox + w]  # (H, W)
    light = 1.0 + 0.12 * coarse[oy : oy + h, ox : ox + w]  # (H, W)
    image = colors[ids] * (1.0 + texture[ids] * grain)[..., None] * light[..., None]  # (H, W, 3)

    sky = ids == c.sky
    rows = np.arange(h, dtype=np.float32)[:, None]  # (H, 1)
    t = np.clip(rows / max(c.horizon, 1.0), 0, 1)  # 0 at the top, 1 at the horizon
    top = np.asarray(c.jitter((0.3, 0.5, 0.85), 0.04), dtype=np.float32)
    low = np.asarray(c.jitter((0.75, 0.85, 0.95), 0.03), dtype=np.float32)
    gradient = top * (1 - t[..., None]) + low * t[..., None]  # (H, 1, 3)
    clouds = np.clip((coarse[oy : oy + h, ox : ox + w] - rng.uniform(-0.1, 0.4)) * 2.5, 0, 1)[..., None]  # (H, W, 1)
    sky_rgb = gradient * (1 - clouds) + 0.95 * clouds
    image = np.where(sky[..., None], sky_rgb, image)
    sun = np.asarray([rng.uniform(0.9, 1.1)] * 3, dtype=np.float32) * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    image = np.clip(image * sun, 0, 1).astype(np.float32)

    return Scene(
        instances=ids,
        labels=classes[ids],
        image=image,
        depth=_depth(c, ids),
        emissive=np.asarray(c.emissive, dtype=bool)[ids],
        horizon=c.horizon,
        lights=c.lights,
    )


def _depth(c: Canvas, ids: np.ndarray) -> np.ndarray:
    """Per-pixel depth in metres, (H, W), from each instance's depth rule (ground row, fixed, or side plane)."""
    kind = np.asarray(c.kind, dtype=np.uint8)[ids]
    param = np.asarray(c.param, dtype=np.float32)[ids]
    v = np.arange(c.h, dtype=np.float32)[:, None] + 0.5  # (H, 1)
    u = np.arange(c.w, dtype=np.float32)[None, :] + 0.5  # (1, W)
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = c.f * c.cam_h / np.maximum(v - c.horizon, 1e-3)
        side = c.f * np.abs(param - c.cam_x) / np.maximum(np.abs(u - c.cx), 1e-3)
    depth = np.where(kind == GROUND, ground, np.where(kind == SIDE, side, param))
    return np.clip(depth, 0.5, None).astype(np.float32)
