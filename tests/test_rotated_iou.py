"""Oriented-box geometry against shapely (independent reference) and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import MultiPoint, Polygon

from mopeft.detection.rotated import area, clip_convex, convex_hull, iou, min_area_rect


def box(cx, cy, w, h, angle):
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def shapely_iou(a, b):
    pa, pb = Polygon(a), Polygon(b)
    return pa.intersection(pb).area / pa.union(pb).area


def shift(poly, dx, dy):
    return np.asarray(poly) + np.array([dx, dy])


UNIT = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=float)


def test_hand_cases():
    assert iou(UNIT, UNIT) == pytest.approx(1.0)
    assert iou(UNIT, shift(UNIT, 5, 0)) == 0.0
    assert iou(UNIT, shift(UNIT, 1, 0)) == 0.0  # touching edge: zero area
    # offset by half: intersection 0.5, union 1.5 -> 1/3
    assert iou(UNIT, shift(UNIT, 0.5, 0)) == pytest.approx(1 / 3)
    # square inside a square of 4x the area -> 1/4
    assert iou(UNIT, UNIT * 2) == pytest.approx(0.25)
    # clockwise order and the flat form give the same answer
    assert iou(UNIT[::-1], (shift(UNIT, 0.5, 0)).ravel().tolist()) == pytest.approx(1 / 3)
    # a unit square rotated 45 degrees about the centre of another: overlap = octagon 2*(sqrt2-1)
    rot = box(0.5, 0.5, 1, 1, np.pi / 4)
    octagon = 2 * (np.sqrt(2) - 1)
    assert iou(UNIT, rot) == pytest.approx(octagon / (2 - octagon))


def test_random_boxes_match_shapely():
    rng = np.random.default_rng(0)
    worst = 0.0
    nonzero = 0
    for _ in range(400):
        a = box(*rng.uniform(0, 10, 2), *rng.uniform(0.5, 6, 2), rng.uniform(0, np.pi))
        b = box(*rng.uniform(0, 10, 2), *rng.uniform(0.5, 6, 2), rng.uniform(0, np.pi))
        ours, ref = iou(a, b), shapely_iou(a, b)
        worst = max(worst, abs(ours - ref))
        nonzero += ref > 0
        inter = Polygon(a).intersection(Polygon(b)).area
        assert area(clip_convex(a, b)) == pytest.approx(inter, abs=1e-9)
    assert worst < 1e-9
    assert nonzero > 100  # the sample really exercises overlapping pairs


def test_hull_and_min_area_rect_match_shapely():
    rng = np.random.default_rng(1)
    for _ in range(100):
        pts = rng.normal(size=(int(rng.integers(3, 40)), 2)) * rng.uniform(0.5, 5, 2)
        hull = convex_hull(pts)
        assert area(hull) == pytest.approx(MultiPoint(pts).convex_hull.area)
        rect = min_area_rect(pts)
        assert area(rect) == pytest.approx(MultiPoint(pts).minimum_rotated_rectangle.area, rel=1e-9)
        # every point lies inside (or on) the rectangle
        assert Polygon(rect).buffer(1e-9).contains(MultiPoint(pts))


def test_min_area_rect_recovers_a_rotated_box():
    b = box(3, 4, 5, 2, 0.3)
    assert iou(min_area_rect(b), b) == pytest.approx(1.0)
