"""The drawing surface of one synthetic scene: a pinhole camera, the instance table and the instance map."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from rein_cli.labels import TRAIN_ID

ROAD, SIDEWALK, BUILDING, WALL, FENCE = (TRAIN_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence"))
POLE, LIGHT, SIGN = (TRAIN_ID[n] for n in ("pole", "traffic light", "traffic sign"))
VEGETATION, TERRAIN, SKY = (TRAIN_ID[n] for n in ("vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BUS = (TRAIN_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
MOTORCYCLE, BICYCLE = TRAIN_ID["motorcycle"], TRAIN_ID["bicycle"]

GROUND, CONSTANT, SIDE = 0, 1, 2  # how an instance's depth is computed: from its row, fixed, or a side plane

Color = Sequence[float] | np.ndarray  # RGB in [0, 1]


@dataclass
class Light:
    """A light source for night scenes: image position, radius in pixels, RGB colour, whether it lights the ground."""

    x: float
    y: float
    radius: float
    color: tuple[float, float, float]
    ground: bool = False


class Canvas:
    """One scene's camera, instance table (class, colour, texture, depth rule per instance) and instance map.

    World coordinates are metres: lateral x, height y, depth z. Everything drawn is an instance id, painted
    into an (H, W) int32 map that starts as sky until `lay_ground` replaces it.
    """

    def __init__(self, width: int, height: int, rng: np.random.Generator) -> None:
        self.w, self.h, self.rng = width, height, rng
        self.f = width * rng.uniform(0.55, 0.8)  # focal length in pixels
        self.cam_h = rng.uniform(1.3, 1.8)  # camera height above the road, metres
        self.cam_x = rng.uniform(-2.0, 2.0)  # lateral camera offset from the road centre
        self.cx = width / 2 + rng.uniform(-0.05, 0.05) * width
        self.horizon = height * rng.uniform(0.36, 0.5)
        self.classes: list[int] = []
        self.colors: list[tuple[float, float, float]] = []
        self.texture: list[float] = []
        self.kind: list[int] = []
        self.param: list[float] = []
        self.emissive: list[bool] = []
        self.lights: list[Light] = []
        self.sky = self.add(SKY, (0.45, 0.62, 0.85), 0.0, CONSTANT, math.inf)
        self._image = Image.new("I", (width, height), self.sky)
        self._draw = ImageDraw.Draw(self._image)

    def add(
        self,
        cls: int,
        color: Color,
        texture: float = 0.06,
        kind: int = CONSTANT,
        param: float = 0.0,
        emissive: bool = False,
    ) -> int:
        """A new instance: train id, base RGB, texture strength, depth rule (``kind`` with ``param``: the depth
        for CONSTANT, the plane's lateral position for SIDE), and whether it glows at night."""
        self.classes.append(cls)
        self.colors.append(tuple(float(np.clip(c, 0, 1)) for c in color))
        self.texture.append(texture)
        self.kind.append(kind)
        self.param.append(param)
        self.emissive.append(emissive)
        return len(self.classes) - 1

    def jitter(self, color: Color, amount: float = 0.08) -> tuple[float, float, float]:
        """``color`` with a random brightness and a random per-channel offset."""
        return tuple(np.clip(np.asarray(color) * self.rng.uniform(0.85, 1.15) + self.rng.normal(0, amount, 3), 0, 1))

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """World (lateral x, height y, depth z) in metres -> pixel (u, v)."""
        return self.cx + self.f * (x - self.cam_x) / z, self.horizon + self.f * (self.cam_h - y) / z

    def scale(self, z: float) -> float:
        """Pixels per metre at depth z."""
        return self.f / z

    def light(
        self, x: float, y: float, z: float, radius: float, color: tuple[float, float, float], ground: bool = False
    ) -> None:
        """A light source at world (x, y, z) whose light reaches ``radius`` metres."""
        u, v = self.project(x, y, z)
        self.lights.append(Light(u, v, self.scale(z) * radius, color, ground=ground))

    def lay_ground(self, ids: np.ndarray) -> None:
        """Start the instance map from per-pixel ground and sky ids, (H, W) int32; everything else is drawn over it."""
        self._image = Image.fromarray(ids)
        self._draw = ImageDraw.Draw(self._image)

    def instance_map(self) -> np.ndarray:
        """The instance map drawn so far, (H, W) int32."""
        return np.asarray(self._image)

    def polygon(self, inst: int, points: Sequence[tuple[float, float, float]]) -> None:
        """A filled polygon through world points (x, y, z)."""
        self._draw.polygon([self.project(x, y, z) for x, y, z in points], fill=inst)

    def quad(self, inst: int, x0: float, x1: float, y0: float, y1: float, z: float) -> None:
        """A frontal rectangle (facing the camera) at depth z."""
        u0, v1 = self.project(x0, y0, z)
        u1, v0 = self.project(x1, y1, z)
        self._draw.rectangle([u0, v0, u1, v1], fill=inst)

    def side_quad(self, inst: int, x: float, z0: float, z1: float, y0: float, y1: float) -> None:
        """A rectangle on the side plane at lateral x, spanning depths z0..z1 and heights y0..y1."""
        self.polygon(inst, [(x, y0, z0), (x, y1, z0), (x, y1, z1), (x, y0, z1)])

    def ellipse(self, inst: int, x: float, y: float, rx: float, ry: float, z: float, width: float = 0) -> None:
        """A frontal ellipse at depth z, filled, or an outline ``width`` metres thick."""
        u, v = self.project(x, y, z)
        s = self.scale(z)
        box = [u - rx * s, v - ry * s, u + rx * s, v + ry * s]
        if width:
            self._draw.ellipse(box, outline=inst, width=max(1, round(width * s)))
        else:
            self._draw.ellipse(box, fill=inst)

    def line(self, inst: int, points: Sequence[tuple[float, float]], z: float, width: float) -> None:
        """A frontal polyline through (x, y) points at depth z, ``width`` metres thick."""
        pixels = [self.project(x, y, z) for x, y in points]
        self._draw.line(pixels, fill=inst, width=max(1, round(width * self.scale(z))))
