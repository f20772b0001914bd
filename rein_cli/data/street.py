"""What stands in a synthetic street: buildings, roadside objects, vehicles and people, drawn on a `Canvas`.

Every object is laid out in world coordinates (metres: lateral x, height y, depth z) and projected
through the canvas's pinhole camera. Builders return ``(depth, draw call)`` pairs so the scene can
draw far to near; each part of an object is an instance with its own class, colour and texture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from rein_cli.data.labels import TRAIN_ID

ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE = (TRAIN_ID[n] for n in ("road", "sidewalk", "building", "wall", "fence", "pole"))
LIGHT, SIGN, VEGETATION, TERRAIN, SKY = (TRAIN_ID[n] for n in ("traffic light", "traffic sign", "vegetation", "terrain", "sky"))
PERSON, RIDER, CAR, TRUCK, BUS = (TRAIN_ID[n] for n in ("person", "rider", "car", "truck", "bus"))
MOTORCYCLE, BICYCLE = TRAIN_ID["motorcycle"], TRAIN_ID["bicycle"]

GROUND, CONSTANT, SIDE = 0, 1, 2  # how an instance's depth is computed: from its row, fixed, or a side plane


@dataclass
class Light:
    """A light source for night scenes: image position, radius in pixels, RGB colour, and whether it lights the ground."""

    x: float
    y: float
    radius: float
    color: tuple[float, float, float]
    ground: bool = False


class Canvas:
    """Instance table plus the PIL drawing surface for one scene."""

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
        self.image: Image.Image | None = None
        self.draw: ImageDraw.ImageDraw | None = None

    def add(self, cls: int, color, texture: float = 0.06, kind: int = CONSTANT, param: float = 0.0,
            emissive: bool = False) -> int:  # fmt: skip
        """A new instance: train id, base RGB in [0, 1], texture strength, depth rule (``kind`` with ``param``:
        the depth for CONSTANT, the plane's lateral position for SIDE), and whether it glows at night."""
        self.classes.append(cls)
        self.colors.append(tuple(float(np.clip(c, 0, 1)) for c in color))
        self.texture.append(texture)
        self.kind.append(kind)
        self.param.append(param)
        self.emissive.append(emissive)
        return len(self.classes) - 1

    def jitter(self, color, amount: float = 0.08) -> tuple[float, float, float]:
        return tuple(np.clip(np.asarray(color) * self.rng.uniform(0.85, 1.15) + self.rng.normal(0, amount, 3), 0, 1))

    def project(self, x: float, y: float, z: float) -> tuple[float, float]:
        """World (lateral x, height y, depth z) in metres -> pixel (u, v)."""
        return self.cx + self.f * (x - self.cam_x) / z, self.horizon + self.f * (self.cam_h - y) / z

    def scale(self, z: float) -> float:
        return self.f / z  # pixels per metre at depth z

    def quad(self, inst: int, x0: float, x1: float, y0: float, y1: float, z: float) -> None:
        """A frontal rectangle (facing the camera) at depth z."""
        u0, v1 = self.project(x0, y0, z)
        u1, v0 = self.project(x1, y1, z)
        self.draw.rectangle([u0, v0, u1, v1], fill=inst)

    def side_quad(self, inst: int, x: float, z0: float, z1: float, y0: float, y1: float) -> None:
        """A rectangle on the side plane at lateral x, spanning depths z0..z1 and heights y0..y1."""
        pts = [self.project(x, y0, z0), self.project(x, y1, z0), self.project(x, y1, z1), self.project(x, y0, z1)]
        self.draw.polygon(pts, fill=inst)

    def ellipse(self, inst: int, x: float, y: float, rx: float, ry: float, z: float, width: float = 0) -> None:
        u, v = self.project(x, y, z)
        s = self.scale(z)
        box = [u - rx * s, v - ry * s, u + rx * s, v + ry * s]
        if width:
            self.draw.ellipse(box, outline=inst, width=max(1, round(width * s)))
        else:
            self.draw.ellipse(box, fill=inst)

    def line(self, inst: int, points: list[tuple[float, float]], z: float, width: float) -> None:
        self.draw.line([self.project(x, y, z) for x, y in points], fill=inst, width=max(1, round(width * self.scale(z))))


def buildings(c: Canvas, side: int, line: float) -> list:
    """Facades along one side of the street, with windows and the faces turned to the camera."""
    rng, ops = c.rng, []
    z = rng.uniform(2.0, 12.0)
    end = rng.uniform(60, 160)
    while z < end:
        length = rng.uniform(8, 28)
        if rng.random() < 0.2:  # a gap between buildings
            z += length * 0.5
            continue
        x = side * (line + rng.uniform(0, 1.5))
        height = rng.uniform(6, 28)
        ops.append((z, _building_call(c, x, z, z + length, height)))
        z += length
    return ops


def _building_call(c: Canvas, x: float, z0: float, z1: float, height: float):
    rng = c.rng
    wall = c.jitter(rng.choice([(0.55, 0.5, 0.45), (0.65, 0.6, 0.55), (0.5, 0.35, 0.3), (0.6, 0.62, 0.65), (0.75, 0.7, 0.6)]))
    facade = c.add(BUILDING, wall, 0.08, SIDE, x)
    end = c.add(BUILDING, np.asarray(wall) * 0.75, 0.08, CONSTANT, z0)
    glass = c.add(BUILDING, c.jitter((0.18, 0.22, 0.28), 0.03), 0.04, SIDE, x)
    lit = c.add(BUILDING, (0.95, 0.8, 0.45), 0.03, SIDE, x, emissive=True)
    floor_h, spacing = rng.uniform(2.8, 3.6), rng.uniform(2.2, 3.5)
    lit_p = rng.uniform(0.1, 0.5)

    def call() -> None:
        c.side_quad(facade, x, z0, z1, 0, height)
        depth = 8.0  # the face towards the camera
        far = x + np.sign(x) * depth
        face = [c.project(x, 0, z0), c.project(x, height, z0), c.project(far, height, z0), c.project(far, 0, z0)]
        c.draw.polygon(face, fill=end)
        for y in np.arange(floor_h * 0.9, height - 1.5, floor_h):
            for zw in np.arange(z0 + 1.0, z1 - 1.5, spacing):
                c.side_quad(lit if rng.random() < lit_p else glass, x * 0.999, zw, zw + 1.2, y, y + 1.5)

    return call


def roadside(c: Canvas, side: int, road_half: float, edge: float) -> list:
    """Fences or walls (layer 2); trees, lamps, signs, traffic lights, pedestrians, parked bicycles (layer 3)."""
    rng, ops = c.rng, []
    if rng.random() < 0.6:  # a fence or a wall at the back of the sidewalk
        z0 = rng.uniform(2, 20)
        z1 = z0 + rng.uniform(10, 50)
        ops.append((2, z0, _barrier_call(c, side * edge, z0, z1, rng.random() < 0.5)))
    z = rng.uniform(3, 12)
    while z < 90:
        kind = rng.choice(
            ["tree", "lamp", "sign", "light", "person", "bicycle", "none"], p=[0.3, 0.15, 0.12, 0.06, 0.22, 0.08, 0.07]
        )
        x = side * rng.uniform(road_half + 0.6, edge - 0.3)
        match kind:
            case "tree":
                call = _tree_call(c, side * (edge - 0.6), z)
            case "lamp":
                call = _lamp_call(c, side * (road_half + 0.5), side, z)
            case "sign":
                call = _sign_call(c, side * (road_half + 0.6), z)
            case "light":
                call = _traffic_light_call(c, side * (road_half + 0.5), side, z)
            case "person":
                call = _person_call(c, x, z, PERSON)
            case "bicycle":
                call = _cycle_call(c, x, z, BICYCLE, rider=False)
            case _:
                call = None
        if call is not None:
            ops.append((3, z, call))
        z += rng.uniform(4, 14)
    return ops


def _barrier_call(c: Canvas, x: float, z0: float, z1: float, is_wall: bool):
    rng = c.rng
    if is_wall:
        inst = c.add(WALL, c.jitter((0.6, 0.57, 0.5)), 0.12, SIDE, x)
        height = rng.uniform(1.0, 2.5)
        return lambda: c.side_quad(inst, x, z0, z1, 0, height)
    inst = c.add(FENCE, c.jitter((0.45, 0.4, 0.35)), 0.08, SIDE, x)
    height, gap = rng.uniform(1.0, 2.0), rng.uniform(0.3, 0.8)

    def call() -> None:
        for y in (height * 0.35, height * 0.9):
            c.side_quad(inst, x, z0, z1, y, y + 0.12)
        for zp in np.arange(z0, z1, gap):
            c.side_quad(inst, x, zp, zp + 0.08, 0, height)

    return call


def _tree_call(c: Canvas, x: float, z: float):
    rng = c.rng
    bark = c.add(VEGETATION, c.jitter((0.35, 0.27, 0.2)), 0.1)
    leaves = c.add(VEGETATION, c.jitter((0.25, 0.42, 0.16), 0.05), 0.35)
    trunk_h, crown = rng.uniform(2.0, 4.0), rng.uniform(1.5, 3.2)
    blobs = [(rng.uniform(-0.8, 0.8) * crown, rng.uniform(-0.3, 0.6) * crown, crown * rng.uniform(0.6, 1.0)) for _ in range(4)]

    def call() -> None:
        c.quad(bark, x - 0.15, x + 0.15, 0, trunk_h + 0.5, z)
        for dx, dy, r in blobs:
            c.ellipse(leaves, x + dx, trunk_h + crown * 0.7 + dy, r, r * 0.85, z)

    return call


def _lamp_call(c: Canvas, x: float, side: int, z: float):
    rng = c.rng
    metal = c.add(POLE, c.jitter((0.45, 0.45, 0.47)), 0.05)
    bulb = c.add(POLE, (1.0, 0.92, 0.7), 0.02, emissive=True)
    height, arm = rng.uniform(5.5, 8.5), rng.uniform(1.0, 2.0)

    def call() -> None:
        c.quad(metal, x - 0.09, x + 0.09, 0, height, z)
        tip = x - side * arm
        c.quad(metal, min(x, tip), max(x, tip), height - 0.12, height, z)
        c.quad(bulb, tip - 0.3, tip + 0.3, height - 0.3, height - 0.12, z)
        u, v = c.project(tip, height - 0.2, z)
        c.lights.append(Light(u, v, c.scale(z) * 6.0, (1.0, 0.85, 0.6), ground=True))

    return call


def _sign_call(c: Canvas, x: float, z: float):
    rng = c.rng
    metal = c.add(POLE, c.jitter((0.5, 0.5, 0.52)), 0.05)
    shape = rng.choice(["circle", "triangle", "square"])
    face = {"circle": (0.8, 0.1, 0.1), "triangle": (0.9, 0.9, 0.85), "square": (0.1, 0.3, 0.75)}[shape]
    plate = c.add(SIGN, c.jitter(face, 0.04), 0.04)
    inner = c.add(SIGN, (0.95, 0.95, 0.95), 0.02)
    height, size = rng.uniform(2.0, 3.0), rng.uniform(0.45, 0.8)

    def call() -> None:
        c.quad(metal, x - 0.05, x + 0.05, 0, height, z)
        y = height + size / 2
        if shape == "circle":
            c.ellipse(plate, x, y, size / 2, size / 2, z)
            c.ellipse(inner, x, y, size / 3, size / 3, z)
        elif shape == "triangle":
            pts = [(x - size / 2, y - size / 2), (x + size / 2, y - size / 2), (x, y + size / 2)]
            c.draw.polygon([c.project(px, py, z) for px, py in pts], fill=plate)
        else:
            c.quad(plate, x - size / 2, x + size / 2, y - size / 2, y + size / 2, z)
            c.quad(inner, x - size / 4, x + size / 4, y - 0.05, y + 0.05, z)

    return call


def _traffic_light_call(c: Canvas, x: float, side: int, z: float):
    rng = c.rng
    metal = c.add(POLE, c.jitter((0.3, 0.3, 0.32)), 0.05)
    housing = c.add(LIGHT, c.jitter((0.12, 0.12, 0.1), 0.02), 0.04)
    state = rng.integers(3)
    lamps = [c.add(LIGHT, col if k == state else np.asarray(col) * 0.25, 0.02, emissive=k == state)
             for k, col in enumerate([(1.0, 0.15, 0.1), (1.0, 0.75, 0.1), (0.2, 1.0, 0.4)])]  # fmt: skip
    height = rng.uniform(3.0, 4.5)
    over_road = rng.random() < 0.5
    arm = rng.uniform(2.0, 4.0) if over_road else 0.0

    def call() -> None:
        c.quad(metal, x - 0.08, x + 0.08, 0, height + 1.0, z)
        hx = x - side * arm
        if over_road:
            c.quad(metal, min(x, hx), max(x, hx), height + 0.9, height + 1.0, z)
        c.quad(housing, hx - 0.18, hx + 0.18, height - 0.1, height + 0.9, z)
        for k, lamp in enumerate(lamps):
            c.ellipse(lamp, hx, height + 0.7 - 0.3 * k, 0.11, 0.11, z)
        u, v = c.project(hx, height + 0.7 - 0.3 * state, z)
        c.lights.append(Light(u, v, c.scale(z) * 0.8, c.colors[lamps[state]]))

    return call


def _person_call(c: Canvas, x: float, z: float, cls: int, seated: bool = False):
    rng = c.rng
    skin = c.add(cls, c.jitter(rng.choice([(0.85, 0.68, 0.55), (0.6, 0.45, 0.35), (0.4, 0.3, 0.22)]), 0.03), 0.03)
    shirt = c.add(cls, c.jitter(rng.uniform(0.1, 0.9, 3), 0.05), 0.08)
    trousers = c.add(cls, c.jitter(rng.uniform(0.05, 0.5, 3), 0.03), 0.08)
    height = rng.uniform(1.55, 1.9)
    stride = rng.uniform(-0.15, 0.15)

    def call() -> None:
        hip = 0.47 * height + (0.25 if seated else 0.0)  # a rider sits on the saddle, feet on the pedals
        feet = [(x - 0.25, 0.35), (x + 0.1, 0.3)] if seated else [(x - 0.1 - stride, 0), (x + 0.1 + stride, 0)]
        c.line(trousers, [(x - 0.08, hip), feet[0]], z, 0.14)
        c.line(trousers, [(x + 0.08, hip), feet[1]], z, 0.14)
        c.quad(shirt, x - 0.2, x + 0.2, hip - 0.05, hip + 0.38 * height, z)
        c.line(shirt, [(x - 0.22, hip + 0.36 * height), (x - 0.26, hip + 0.08 * height)], z, 0.09)
        c.line(shirt, [(x + 0.22, hip + 0.36 * height), (x + 0.26, hip + 0.08 * height)], z, 0.09)
        c.ellipse(skin, x, hip + 0.46 * height, 0.11, 0.13, z)

    return call


def _cycle_call(c: Canvas, x: float, z: float, cls: int, rider: bool):
    """A bicycle or motorcycle in side view, optionally with a rider."""
    rng = c.rng
    frame = c.add(cls, c.jitter(rng.uniform(0.1, 0.9, 3)), 0.05)
    tyre = c.add(cls, (0.08, 0.08, 0.08), 0.03)
    r = 0.34 if cls == BICYCLE else 0.32
    wheelbase = 1.05 if cls == BICYCLE else 1.4
    person = _person_call(c, x - 0.1, z - 0.01, RIDER, seated=True) if rider else None

    def call() -> None:
        for dx in (-wheelbase / 2, wheelbase / 2):
            c.ellipse(tyre, x + dx, r, r, r, z, width=0.06 if cls == BICYCLE else 0.12)
        if cls == BICYCLE:
            pts = [(x - wheelbase / 2, r), (x - 0.05, r), (x + 0.3, 0.85), (x - 0.15, 0.85), (x - 0.05, r)]
            c.line(frame, pts, z, 0.05)
            c.line(frame, [(x + 0.3, 0.85), (x + wheelbase / 2, r)], z, 0.05)
        else:
            c.quad(frame, x - 0.5, x + 0.45, r, 0.9, z)
            c.quad(frame, x - 0.2, x + 0.55, 0.85, 1.05, z)
        if person is not None:
            person()

    return call


def traffic(c: Canvas, road_half: float) -> list:
    """Cars, trucks, buses and riders in the lanes and parked along the curb."""
    rng, ops = c.rng, []
    lanes = max(1, round(2 * road_half / 3.3))
    lane_w = 2 * road_half / lanes
    for k in range(lanes):
        lx = -road_half + (k + 0.5) * lane_w
        oncoming = lx < 0 and lanes > 1
        z = rng.uniform(5, 20)
        while z < 110:
            kind = rng.choice(["car", "truck", "bus", "motorcycle", "bicycle"], p=[0.72, 0.09, 0.07, 0.06, 0.06])
            x = lx + rng.uniform(-0.3, 0.3)
            if kind in ("motorcycle", "bicycle"):
                cls = MOTORCYCLE if kind == "motorcycle" else BICYCLE
                ops.append((z, _cycle_call(c, x, z, cls, rider=True)))  # riding along, seen from the side
            else:
                ops.append((z, _vehicle_call(c, x, z, kind, oncoming)))
            z += rng.uniform(8, 35)
    for side in (-1, 1):  # parked cars
        if rng.random() < 0.5:
            for z in np.arange(rng.uniform(4, 10), rng.uniform(20, 60), rng.uniform(5.5, 8)):
                ops.append((z, _vehicle_call(c, side * (road_half - 1.1), z, "car", False)))
    return ops


def _vehicle_call(c: Canvas, x: float, z: float, kind: str, oncoming: bool):
    rng = c.rng
    cls = {"car": CAR, "truck": TRUCK, "bus": BUS}[kind]
    paint = rng.choice(
        [(0.8, 0.8, 0.82), (0.1, 0.1, 0.12), (0.6, 0.1, 0.1), (0.15, 0.25, 0.5), (0.5, 0.52, 0.55), (0.85, 0.75, 0.2)]
    )
    body = c.add(cls, c.jitter(paint, 0.03), 0.04)
    glass = c.add(cls, c.jitter((0.12, 0.15, 0.2), 0.02), 0.03)
    tyre = c.add(cls, (0.05, 0.05, 0.05), 0.03)
    lamp = c.add(cls, (1.0, 1.0, 0.9) if oncoming else (0.9, 0.05, 0.05), 0.02, emissive=True)
    shadow = c.add(ROAD, (0.12, 0.12, 0.13), 0.05, GROUND)
    width, height = {"car": (1.8, rng.uniform(1.35, 1.6)), "truck": (2.5, rng.uniform(3.0, 3.8)), "bus": (2.55, 3.2)}[kind]
    half = width / 2

    def call() -> None:
        ground = [(x - half, z - 0.2), (x + half, z - 0.2), (x + half, z + 3.5), (x - half, z + 3.5)]
        c.draw.polygon([c.project(gx, 0, gz) for gx, gz in ground], fill=shadow)
        c.quad(tyre, x - half + 0.05, x - half + 0.35, 0, 0.4, z)
        c.quad(tyre, x + half - 0.35, x + half - 0.05, 0, 0.4, z)
        if kind == "car":
            c.quad(body, x - half, x + half, 0.25, height * 0.62, z)
            pts = [
                (x - half * 0.92, height * 0.62),
                (x - half * 0.7, height),
                (x + half * 0.7, height),
                (x + half * 0.92, height * 0.62),
            ]
            c.draw.polygon([c.project(px, py, z) for px, py in pts], fill=body)
            inner = [(x - half * 0.8, height * 0.64), (x - half * 0.64, height * 0.95),
                     (x + half * 0.64, height * 0.95), (x + half * 0.8, height * 0.64)]  # fmt: skip
            c.draw.polygon([c.project(px, py, z) for px, py in inner], fill=glass)
        else:
            c.quad(body, x - half, x + half, 0.3, height, z)
            top = height * (0.55 if kind == "bus" else 0.75)
            c.quad(glass, x - half * 0.85, x + half * 0.85, top, height * 0.93, z)
        y = 0.7 if kind == "car" else 0.9
        for lx in (x - half + 0.25, x + half - 0.25):
            c.quad(lamp, lx - 0.15, lx + 0.15, y - 0.07, y + 0.07, z)
            u, v = c.project(lx, y, z)
            c.lights.append(Light(u, v, c.scale(z) * (1.2 if oncoming else 0.6), c.colors[lamp], ground=oncoming))

    return call


def backdrop(c: Canvas) -> list:
    """Far buildings or tree lines closing the street, and clouds on the horizon."""
    rng, ops = c.rng, []
    z = rng.uniform(120, 250)
    x = -60.0
    while x < 60:
        w = rng.uniform(8, 25)
        if rng.random() < 0.6:
            inst = c.add(BUILDING, c.jitter((0.55, 0.55, 0.58)), 0.05, CONSTANT, z)
            h = rng.uniform(8, 40)
        else:
            inst = c.add(VEGETATION, c.jitter((0.22, 0.35, 0.18)), 0.25, CONSTANT, z)
            h = rng.uniform(5, 15)
        ops.append((z, lambda inst=inst, x=x, w=w, h=h: c.quad(inst, x, x + w, 0, h, z)))
        x += w
    return ops
