"""The synthetic data set: deterministic images with structure at several scales, made by the suite itself.

Image i depends only on (SYNTHETIC_SEED, i, num_classes), never on the data set size, and is drawn in continuous
coordinates [0, 1]^2, so one index shows the same scene at every resolution. Each image has a smooth two-colour
gradient, Gaussian blobs at three widths, a sinusoidal grating inside a sharp-edged disk or square, and a rotated
solid bar (hard edges). Gratings finer than a resolution can carry are damped (a Gaussian low-pass in frequency)
instead of aliasing. With classes, the class fixes the palette hue and the grating orientation and frequency.

Shapes (`shapes_image`, the demo's data): 1-3 discs, squares, triangles or crosses in six named colours at three
scales, apart from each other, on one plain light background; also deterministic and drawn in continuous
coordinates, so any resolution shows the same scene. The `synthetic` source keeps the scenes above.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SYNTHETIC_SEED = 20240601  # fixed: the data set is part of the suite, not of a run
SYNTHETIC_VERSION = 1  # bump when the generator changes (invalidates caches)
BLOB_WIDTHS = (0.22, 0.11, 0.055)  # Gaussian sigmas (fraction of the image): coarse, middle and fine scales
GRATING_FREQS = (3.0, 6.0, 12.0, 24.0)  # cycles per image, one octave apart
EDGE_PX = 0.5  # edge softness in pixels: antialiased but sharp at any resolution


def _colour(rng: np.random.Generator, hue: float | None) -> np.ndarray:
    h = rng.uniform() if hue is None else (hue + rng.uniform(-0.06, 0.06)) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(0.45, 1.0), rng.uniform(0.35, 1.0)), dtype=np.float32)


def _blend(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return img * (1.0 - alpha[None]) + colour[:, None, None] * alpha[None]


def _edge(signed_distance: np.ndarray, res: int) -> np.ndarray:
    """Inside-mask (1 inside, 0 outside) from a signed distance in image units, softened over ~1 pixel."""
    z = np.clip(signed_distance * res / EDGE_PX, -30.0, 30.0)
    return 1.0 / (1.0 + np.exp(-z))


def synthetic_image(index: int, res: int, num_classes: int = 0) -> np.ndarray:
    """Image `index` at `res` -> uint8 [3, res, res]."""
    rng = np.random.default_rng([SYNTHETIC_SEED, index, num_classes])
    label = index % num_classes if num_classes > 0 else None
    hue = None if label is None else label / num_classes
    coords = (np.arange(res, dtype=np.float32) + 0.5) / res
    v, u = np.meshgrid(coords, coords, indexing="ij")  # v: rows (down), u: columns (right)

    # Gradient background.
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip((np.cos(angle) * (u - 0.5) + np.sin(angle) * (v - 0.5)) * 1.2 + 0.5, 0.0, 1.0)
    c0, c1 = _colour(rng, hue), _colour(rng, None if hue is None else (hue + 0.5) % 1.0)
    img = c0[:, None, None] * (1.0 - ramp[None]) + c1[:, None, None] * ramp[None]

    # Blobs at three widths.
    for width in BLOB_WIDTHS:
        for _ in range(int(rng.integers(1, 3))):
            cu, cv = rng.uniform(0.1, 0.9, size=2)
            sigma = width * rng.uniform(0.7, 1.3)
            blob = np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * sigma**2))
            img = _blend(img, _colour(rng, hue), rng.uniform(0.5, 0.95) * blob)

    # Grating inside a disk or a square.
    if label is None:
        theta, freq = rng.uniform(0, math.pi), GRATING_FREQS[int(rng.integers(len(GRATING_FREQS)))]
    else:
        theta = math.pi * label / num_classes + rng.uniform(-0.1, 0.1)
        freq = GRATING_FREQS[label % len(GRATING_FREQS)]
    damping = math.exp(-0.5 * (freq / (0.25 * res)) ** 2)  # low-pass: Nyquist is res/2 cycles per image
    phase = rng.uniform(0, 2 * math.pi)
    wave = 0.5 + 0.5 * damping * np.sin(2 * math.pi * freq * (np.cos(theta) * u + np.sin(theta) * v) + phase)
    cu, cv, half = *rng.uniform(0.3, 0.7, size=2), rng.uniform(0.15, 0.3)
    if rng.uniform() < 0.5:
        inside = half - np.sqrt((u - cu) ** 2 + (v - cv) ** 2)
    else:
        inside = half - np.maximum(np.abs(u - cu), np.abs(v - cv))
    stripe_colour = _colour(rng, hue)
    img = _blend(img, stripe_colour, _edge(inside, res) * wave)

    # A rotated solid bar: long straight edges.
    cu, cv, phi = *rng.uniform(0.2, 0.8, size=2), rng.uniform(0, math.pi)
    along = np.cos(phi) * (u - cu) + np.sin(phi) * (v - cv)
    across = -np.sin(phi) * (u - cu) + np.cos(phi) * (v - cv)
    bar = np.minimum(rng.uniform(0.15, 0.35) - np.abs(along), rng.uniform(0.02, 0.06) - np.abs(across))
    img = _blend(img, _colour(rng, None), 0.9 * _edge(bar, res))

    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def synthetic_labels(count: int, num_classes: int) -> np.ndarray | None:
    """Balanced labels (index mod classes), or None when unconditional."""
    return np.arange(count, dtype=np.int64) % num_classes if num_classes > 0 else None


def synthetic_items(count: int, res: int, num_classes: int) -> Iterator[tuple[np.ndarray, None]]:
    for index in range(count):
        yield synthetic_image(index, res, num_classes), None


# ----------------------------------------------------------------------------------------------------------------
# Shapes: a data set whose structure a person recognises at a glance (the demo's; `bench demo`)

SHAPES_SEED = 20240602  # fixed, like SYNTHETIC_SEED
SHAPES_VERSION = 1  # bump when the shapes generator changes
SHAPE_KINDS = ("disc", "square", "triangle", "cross")
SHAPE_SCALES = (0.3, 0.2, 0.12)  # shape radius (centre to farthest point) as a fraction of the image: three scales
SHAPE_COLOURS = (  # saturated, easy to name: red, orange, yellow-green, blue, purple, teal
    (0.86, 0.16, 0.16),
    (0.96, 0.55, 0.06),
    (0.45, 0.75, 0.10),
    (0.15, 0.35, 0.85),
    (0.55, 0.20, 0.70),
    (0.05, 0.60, 0.60),
)
SHAPES_BACKGROUND = (0.95, 0.94, 0.90)  # one plain, light background for every image
SHAPES_PER_IMAGE = (1, 3)  # inclusive range
SHAPE_MARGIN = 0.03  # free space between shapes and to the border, fraction of the image
PLACEMENT_TRIES = 20


@dataclass(frozen=True)
class Shape:
    kind: str  # one of SHAPE_KINDS
    colour: tuple[float, float, float]  # RGB in [0, 1]
    centre: tuple[float, float]  # (u, v): column, row in [0, 1]
    radius: float  # centre to the farthest point, fraction of the image
    angle: float  # rotation in radians (discs ignore it)


def shape_scene(index: int) -> list[Shape]:
    """The shapes of image `index`, larger scales first: 1-3 at random scales, fully inside the image and apart from
    each other (a shape that finds no free place in PLACEMENT_TRIES draws is left out)."""
    rng = np.random.default_rng([SHAPES_SEED, index])
    count = int(rng.integers(SHAPES_PER_IMAGE[0], SHAPES_PER_IMAGE[1] + 1))
    scales = sorted(rng.integers(0, len(SHAPE_SCALES), size=count).tolist())  # largest first
    shapes: list[Shape] = []
    for scale in scales:
        radius = SHAPE_SCALES[scale] * rng.uniform(0.85, 1.15)
        kind = SHAPE_KINDS[int(rng.integers(len(SHAPE_KINDS)))]
        colour = SHAPE_COLOURS[int(rng.integers(len(SHAPE_COLOURS)))]
        angle = float(rng.uniform(0, math.pi / 2))
        for _ in range(PLACEMENT_TRIES):
            cu, cv = rng.uniform(radius + SHAPE_MARGIN, 1 - SHAPE_MARGIN - radius, size=2)
            if all(math.hypot(cu - o.centre[0], cv - o.centre[1]) > radius + o.radius + SHAPE_MARGIN for o in shapes):
                shapes.append(Shape(kind, colour, (float(cu), float(cv)), float(radius), angle))
                break
    return shapes


def shape_distance(shape: Shape, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance-like field in image units: positive inside the shape, 0 on its edge."""
    du, dv = u - shape.centre[0], v - shape.centre[1]
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    x, y = c * du + s * dv, -s * du + c * dv  # shape-aligned coordinates
    r = shape.radius
    if shape.kind == "disc":
        return r - np.sqrt(du**2 + dv**2)
    if shape.kind == "square":  # corners at distance r from the centre
        return r / math.sqrt(2) - np.maximum(np.abs(x), np.abs(y))
    if shape.kind == "triangle":  # equilateral, circumradius r, inradius r / 2
        normals = [(math.cos(a), math.sin(a)) for a in (math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
        return np.min(np.stack([r / 2 - (nx * x + ny * y) for nx, ny in normals]), axis=0)
    if shape.kind == "cross":  # a plus sign: two bars of half-length r and half-width r / 3
        bar_x = np.minimum(r - np.abs(x), r / 3 - np.abs(y))
        bar_y = np.minimum(r / 3 - np.abs(x), r - np.abs(y))
        return np.maximum(bar_x, bar_y)
    raise ValueError(f"unknown shape kind {shape.kind!r}")


def shapes_image(index: int, res: int) -> np.ndarray:
    """Shapes image `index` at `res` -> uint8 [3, res, res]: coloured shapes on a plain background, antialiased."""
    coords = (np.arange(res, dtype=np.float32) + 0.5) / res
    v, u = np.meshgrid(coords, coords, indexing="ij")
    img = np.broadcast_to(np.array(SHAPES_BACKGROUND, dtype=np.float32)[:, None, None], (3, res, res))
    for shape in shape_scene(index):
        img = _blend(img, np.array(shape.colour, dtype=np.float32), _edge(shape_distance(shape, u, v), res))
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)


def shapes_images(count: int, res: int) -> np.ndarray:
    """Images 0..count-1 of the shapes data set -> uint8 [count, 3, res, res]."""
    return np.stack([shapes_image(i, res) for i in range(count)]) if count else np.zeros((0, 3, res, res), np.uint8)
