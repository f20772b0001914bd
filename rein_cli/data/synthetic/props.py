"""What stands in a synthetic street: the backdrop, buildings, roadside objects and traffic, as deferred drawings."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import numpy as np

from rein_cli.data.synthetic.canvas import (
    BICYCLE,
    BUILDING,
    BUS,
    CAR,
    CONSTANT,
    FENCE,
    GROUND,
    LIGHT,
    MOTORCYCLE,
    PERSON,
    POLE,
    RIDER,
    ROAD,
    SIDE,
    SIGN,
    TRUCK,
    VEGETATION,
    WALL,
    Canvas,
)

Draw = Callable[[], None]

# Drawing layers, drawn in this order and within a layer far to near: the street's end, facades, fences and
# walls, then everything on the sidewalks and the road. Facades lie beyond the sidewalk, so whatever stands
# on the sidewalk or the road hides them, whatever its depth.
BACKDROP, FACADES, BARRIERS, STREET = 0, 1, 2, 3


class Drawing(NamedTuple):
    """One object to draw: its layer, its depth in metres (the far ones first) and the call that draws it."""

    layer: int
    depth: float
    draw: Draw


def backdrop(c: Canvas) -> list[Drawing]:
    """Far buildings or tree lines closing the street."""
    rng, drawings = c.rng, []
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
        drawings.append(Drawing(BACKDROP, z, partial(c.quad, inst, x, x + w, 0, h, z)))
        x += w
    return drawings


def buildings(c: Canvas, side: int, line: float) -> list[Drawing]:
    """Facades along one side of the street (-1 left, 1 right) beyond lateral distance ``line``."""
    rng, drawings = c.rng, []
    z = rng.uniform(2.0, 12.0)
    end = rng.uniform(60, 160)
    while z < end:
        length = rng.uniform(8, 28)
        if rng.random() < 0.2:  # a gap between buildings
            z += length * 0.5
            continue
        x = side * (line + rng.uniform(0, 1.5))
        height = rng.uniform(6, 28)
        drawings.append(Drawing(FACADES, z, _building_call(c, x, z, z + length, height)))
        z += length
    return drawings


def _building_call(c: Canvas, x: float, z0: float, z1: float, height: float) -> Draw:
    """A facade on the side plane at x from z0 to z1, with lit and dark windows and the face turned to the camera."""
    rng = c.rng
    colors = [(0.55, 0.5, 0.45), (0.65, 0.6, 0.55), (0.5, 0.35, 0.3), (0.6, 0.62, 0.65), (0.75, 0.7, 0.6)]
    wall = c.jitter(rng.choice(colors))
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
        c.polygon(end, [(x, 0, z0), (x, height, z0), (far, height, z0), (far, 0, z0)])
        for y in np.arange(floor_h * 0.9, height - 1.5, floor_h):
            for zw in np.arange(z0 + 1.0, z1 - 1.5, spacing):
                c.side_quad(lit if rng.random() < lit_p else glass, x * 0.999, zw, zw + 1.2, y, y + 1.5)

    return call


def roadside(c: Canvas, side: int, road_half: float, edge: float) -> list[Drawing]:
    """A fence or a wall; trees, lamps, signs, traffic lights, pedestrians and parked bicycles on one sidewalk."""
    rng, drawings = c.rng, []
    if rng.random() < 0.6:  # a fence or a wall at the back of the sidewalk
        z0 = rng.uniform(2, 20)
        z1 = z0 + rng.uniform(10, 50)
        drawings.append(Drawing(BARRIERS, z0, _barrier_call(c, side * edge, z0, z1, rng.random() < 0.5)))
    z = rng.uniform(3, 12)
    while z < 90:
        kinds = ["tree", "lamp", "sign", "light", "person", "bicycle", "none"]
        kind = rng.choice(kinds, p=[0.3, 0.15, 0.12, 0.06, 0.22, 0.08, 0.07])
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
            drawings.append(Drawing(STREET, z, call))
        z += rng.uniform(4, 14)
    return drawings


def _barrier_call(c: Canvas, x: float, z0: float, z1: float, is_wall: bool) -> Draw:
    """A solid wall or a slatted fence on the side plane at x from z0 to z1."""
    rng = c.rng
    if is_wall:
        inst = c.add(WALL, c.jitter((0.6, 0.57, 0.5)), 0.12, SIDE, x)
        height = rng.uniform(1.0, 2.5)
        return partial(c.side_quad, inst, x, z0, z1, 0, height)
    inst = c.add(FENCE, c.jitter((0.45, 0.4, 0.35)), 0.08, SIDE, x)
    height, gap = rng.uniform(1.0, 2.0), rng.uniform(0.3, 0.8)

    def call() -> None:
        for y in (height * 0.35, height * 0.9):
            c.side_quad(inst, x, z0, z1, y, y + 0.12)
        for zp in np.arange(z0, z1, gap):
            c.side_quad(inst, x, zp, zp + 0.08, 0, height)

    return call


def _tree_call(c: Canvas, x: float, z: float) -> Draw:
    """A trunk and a crown of four leafy blobs."""
    rng = c.rng
    bark = c.add(VEGETATION, c.jitter((0.35, 0.27, 0.2)), 0.1)
    leaves = c.add(VEGETATION, c.jitter((0.25, 0.42, 0.16), 0.05), 0.35)
    trunk_h, crown = rng.uniform(2.0, 4.0), rng.uniform(1.5, 3.2)
    blobs = [
        (rng.uniform(-0.8, 0.8) * crown, rng.uniform(-0.3, 0.6) * crown, crown * rng.uniform(0.6, 1.0))
        for _ in range(4)
    ]

    def call() -> None:
        c.quad(bark, x - 0.15, x + 0.15, 0, trunk_h + 0.5, z)
        for dx, dy, r in blobs:
            c.ellipse(leaves, x + dx, trunk_h + crown * 0.7 + dy, r, r * 0.85, z)

    return call


def _lamp_call(c: Canvas, x: float, side: int, z: float) -> Draw:
    """A street lamp whose arm reaches over the road; it lights the ground at night."""
    rng = c.rng
    metal = c.add(POLE, c.jitter((0.45, 0.45, 0.47)), 0.05)
    bulb = c.add(POLE, (1.0, 0.92, 0.7), 0.02, emissive=True)
    height, arm = rng.uniform(5.5, 8.5), rng.uniform(1.0, 2.0)

    def call() -> None:
        c.quad(metal, x - 0.09, x + 0.09, 0, height, z)
        tip = x - side * arm
        c.quad(metal, min(x, tip), max(x, tip), height - 0.12, height, z)
        c.quad(bulb, tip - 0.3, tip + 0.3, height - 0.3, height - 0.12, z)
        c.light(tip, height - 0.2, z, 6.0, (1.0, 0.85, 0.6), ground=True)

    return call


def _sign_call(c: Canvas, x: float, z: float) -> Draw:
    """A round, triangular or square traffic sign on a pole."""
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
            c.polygon(plate, [(x - size / 2, y - size / 2, z), (x + size / 2, y - size / 2, z), (x, y + size / 2, z)])
        else:
            c.quad(plate, x - size / 2, x + size / 2, y - size / 2, y + size / 2, z)
            c.quad(inner, x - size / 4, x + size / 4, y - 0.05, y + 0.05, z)

    return call


def _traffic_light_call(c: Canvas, x: float, side: int, z: float) -> Draw:
    """A three-lamp traffic light beside the road or on an arm over it; the lit lamp glows at night."""
    rng = c.rng
    metal = c.add(POLE, c.jitter((0.3, 0.3, 0.32)), 0.05)
    housing = c.add(LIGHT, c.jitter((0.12, 0.12, 0.1), 0.02), 0.04)
    state = rng.integers(3)
    lamps = [
        c.add(LIGHT, col if k == state else np.asarray(col) * 0.25, 0.02, emissive=k == state)
        for k, col in enumerate([(1.0, 0.15, 0.1), (1.0, 0.75, 0.1), (0.2, 1.0, 0.4)])
    ]
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
        c.light(hx, height + 0.7 - 0.3 * state, z, 0.8, c.colors[lamps[state]])

    return call


def _person_call(c: Canvas, x: float, z: float, cls: int, seated: bool = False) -> Draw:
    """A pedestrian (walking) or a rider (``seated``, feet on the pedals), in train id ``cls``."""
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


def _cycle_call(c: Canvas, x: float, z: float, cls: int, rider: bool) -> Draw:
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


def traffic(c: Canvas, road_half: float) -> list[Drawing]:
    """Cars, trucks, buses and riders in the lanes, and cars parked along the curb."""
    rng, drawings = c.rng, []
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
                call = _cycle_call(c, x, z, cls, rider=True)  # riding along, seen from the side
            else:
                call = _vehicle_call(c, x, z, kind, oncoming)
            drawings.append(Drawing(STREET, z, call))
            z += rng.uniform(8, 35)
    for side in (-1, 1):  # parked cars
        if rng.random() < 0.5:
            for z in np.arange(rng.uniform(4, 10), rng.uniform(20, 60), rng.uniform(5.5, 8)):
                drawings.append(Drawing(STREET, z, _vehicle_call(c, side * (road_half - 1.1), z, "car", False)))
    return drawings


def _vehicle_call(c: Canvas, x: float, z: float, kind: str, oncoming: bool) -> Draw:
    """A car, truck or bus seen from behind (or from the front when ``oncoming``), with its shadow and lights."""
    rng = c.rng
    cls = {"car": CAR, "truck": TRUCK, "bus": BUS}[kind]
    paints = [
        (0.8, 0.8, 0.82),
        (0.1, 0.1, 0.12),
        (0.6, 0.1, 0.1),
        (0.15, 0.25, 0.5),
        (0.5, 0.52, 0.55),
        (0.85, 0.75, 0.2),
    ]
    body = c.add(cls, c.jitter(rng.choice(paints), 0.03), 0.04)
    glass = c.add(cls, c.jitter((0.12, 0.15, 0.2), 0.02), 0.03)
    tyre = c.add(cls, (0.05, 0.05, 0.05), 0.03)
    lamp = c.add(cls, (1.0, 1.0, 0.9) if oncoming else (0.9, 0.05, 0.05), 0.02, emissive=True)
    shadow = c.add(ROAD, (0.12, 0.12, 0.13), 0.05, GROUND)
    sizes = {"car": (1.8, rng.uniform(1.35, 1.6)), "truck": (2.5, rng.uniform(3.0, 3.8)), "bus": (2.55, 3.2)}
    width, height = sizes[kind]
    half = width / 2

    def call() -> None:
        footprint = [(x - half, z - 0.2), (x + half, z - 0.2), (x + half, z + 3.5), (x - half, z + 3.5)]  # (x, z)
        c.polygon(shadow, [(gx, 0, gz) for gx, gz in footprint])
        c.quad(tyre, x - half + 0.05, x - half + 0.35, 0, 0.4, z)
        c.quad(tyre, x + half - 0.35, x + half - 0.05, 0, 0.4, z)
        if kind == "car":
            c.quad(body, x - half, x + half, 0.25, height * 0.62, z)
            roof = [(-0.92, 0.62), (-0.7, 1.0), (0.7, 1.0), (0.92, 0.62)]  # (offset from x / half width, y / height)
            c.polygon(body, [(x + half * px, height * py, z) for px, py in roof])
            window = [(-0.8, 0.64), (-0.64, 0.95), (0.64, 0.95), (0.8, 0.64)]
            c.polygon(glass, [(x + half * px, height * py, z) for px, py in window])
        else:
            c.quad(body, x - half, x + half, 0.3, height, z)
            top = height * (0.55 if kind == "bus" else 0.75)
            c.quad(glass, x - half * 0.85, x + half * 0.85, top, height * 0.93, z)
        y = 0.7 if kind == "car" else 0.9
        for lx in (x - half + 0.25, x + half - 0.25):
            c.quad(lamp, lx - 0.15, lx + 0.15, y - 0.07, y + 0.07, z)
            c.light(lx, y, z, 1.2 if oncoming else 0.6, c.colors[lamp], ground=oncoming)

    return call
