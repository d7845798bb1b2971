"""The shapes data set (the demo's): deterministic, the same scene at any resolution, and the structure it claims."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from bench.datasets.synthetic import (
    SHAPE_COLOURS,
    SHAPE_KINDS,
    SHAPE_MARGIN,
    SHAPE_SCALES,
    SHAPES_BACKGROUND,
    Shape,
    shape_distance,
    shape_scene,
    shapes_image,
    shapes_images,
)

SCENES = 400


def box_down(img: np.ndarray, factor: int) -> np.ndarray:
    c, h, w = img.shape
    return img.reshape(c, h // factor, factor, w // factor, factor).mean((2, 4))


def test_shapes_are_deterministic() -> None:
    assert np.array_equal(shapes_image(7, 32), shapes_image(7, 32))
    batch = shapes_images(5, 16)
    assert batch.shape == (5, 3, 16, 16) and batch.dtype == np.uint8
    assert np.array_equal(batch[3], shapes_image(3, 16))
    assert not np.array_equal(batch[0], batch[1])


def test_same_scene_at_every_resolution() -> None:
    for index in range(8):
        high = box_down(shapes_image(index, 128).astype(float), 4)
        low = shapes_image(index, 32).astype(float)
        assert np.corrcoef(high.ravel(), low.ravel())[0, 1] > 0.97  # edges are ~1 px soft at either resolution
        assert np.median(np.abs(high - low)) <= 1.0  # away from the edges: the same grey levels


def test_scenes_have_the_claimed_structure() -> None:
    scenes = [shape_scene(i) for i in range(SCENES)]
    counts = Counter(len(s) for s in scenes)
    assert set(counts) == {1, 2, 3}
    shapes = [shape for scene in scenes for shape in scene]
    assert {s.kind for s in shapes} == set(SHAPE_KINDS)
    assert {s.colour for s in shapes} == set(SHAPE_COLOURS)
    for scale in SHAPE_SCALES:  # three scales (radius within +-15% of each)
        assert any(abs(s.radius / scale - 1) <= 0.15 + 1e-9 for s in shapes)
    for scene in scenes:
        scales = [int(np.argmin([abs(s.radius - r) for r in SHAPE_SCALES])) for s in scene]
        assert scales == sorted(scales)  # larger scales first, so smaller shapes are never drawn under them
        for i, a in enumerate(scene):
            assert min(a.centre) >= a.radius and max(a.centre) <= 1 - a.radius  # fully inside
            for b in scene[i + 1 :]:
                gap = math.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]) - a.radius - b.radius
                assert gap > SHAPE_MARGIN - 1e-9  # apart: no shape hides another


def test_pixels_are_background_or_their_shape_colour() -> None:
    res = 128
    coords = (np.arange(res) + 0.5) / res
    v, u = np.meshgrid(coords, coords, indexing="ij")
    background = np.round(np.array(SHAPES_BACKGROUND) * 255)
    for index in range(20):
        img = shapes_image(index, res).astype(float)
        fields = [shape_distance(s, u, v) for s in shape_scene(index)]
        outside = np.all(np.stack(fields) < -4 / res, axis=0)  # four pixels away from every shape
        assert np.abs(img[:, outside] - background[:, None]).max() <= 1
        for shape, field in zip(shape_scene(index), fields, strict=True):
            inside = field > 4 / res
            assert inside.any()
            assert np.abs(img[:, inside] - np.round(np.array(shape.colour) * 255)[:, None]).max() <= 1


@pytest.mark.parametrize(
    ("kind", "area"),  # area / radius^2 of each kind (radius: centre to the farthest point)
    [("disc", math.pi), ("square", 2.0), ("triangle", 3 * math.sqrt(3) / 4), ("cross", 20 / 9)],
)
def test_shape_areas_match_their_geometry(kind: str, area: float) -> None:
    res, radius = 512, 0.3
    coords = (np.arange(res) + 0.5) / res
    v, u = np.meshgrid(coords, coords, indexing="ij")
    shape = Shape(kind, SHAPE_COLOURS[0], (0.5, 0.5), radius, angle=0.4)
    measured = (shape_distance(shape, u, v) > 0).mean()
    assert measured == pytest.approx(area * radius**2, rel=0.01)
