"""Oriented-box geometry against shapely (independent reference), the hand-written clipper the
shapely IoU replaced (kept here as a second reference) and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from detection_reference import box, clip_iou
from shapely.geometry import MultiPoint, Polygon

from mopeft.detection.rotated import area, clip_convex, convex_hull, iou, iou_matrix, iou_pairs, min_area_rect


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


def random_boxes(rng, n, extent=10.0):
    return np.stack(
        [box(*rng.uniform(0, extent, 2), *rng.uniform(0.5, 6, 2), rng.uniform(0, np.pi)) for _ in range(n)]
    )


def test_shapely_iou_equals_the_hand_written_clip():
    """The shapely IoU reproduces the clipper it replaced (what the AP was computed with before)."""
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 60), random_boxes(rng, 50)
    matrix = iou_matrix(a, b)
    ref = np.array([[clip_iou(p, q) for q in b] for p in a])
    assert matrix.shape == (60, 50)
    assert np.abs(matrix - ref).max() < 1e-12
    assert (ref > 0).sum() > 300 and (ref == 0).sum() > 300  # both the pre-filter and GEOS are exercised
    assert ((matrix == 0) == (ref == 0)).all()  # disjoint pairs are exactly 0, overlapping ones are not
    # the scalar form, the list form and the (N,4,2) array form agree exactly
    assert iou(a[3], b[7]) == matrix[3, 7]
    np.testing.assert_array_equal(iou_matrix(list(a), list(b)), matrix)
    np.testing.assert_array_equal(iou_pairs(a[:50], b), np.diag(matrix[:50]))
    with pytest.raises(ValueError, match="as many polygons"):
        iou_pairs(a, b)


def test_iou_matrix_shapes_and_mixed_vertex_counts():
    tri = np.array([[0, 0], [2, 0], [0, 2]], dtype=float)  # area 2, overlaps UNIT in 1
    assert iou_matrix([], [UNIT]).shape == (0, 1) and iou_matrix([UNIT], np.zeros((0, 4, 2))).shape == (1, 0)
    m = iou_matrix([UNIT, tri, shift(UNIT, 9, 9)], [UNIT, tri])
    np.testing.assert_allclose(m, [[1, 0.5], [0.5, 1], [0, 0]], atol=1e-15)


def test_degenerate_and_self_intersecting_polygons():
    # no area (a point, a segment, fewer than 3 vertices): IoU 0, never an exception
    assert iou(np.zeros((4, 2)), UNIT) == 0.0
    assert iou([[0, 0], [1, 0], [2, 0], [3, 0]], UNIT) == 0.0
    assert iou([[0, 0], [1, 1]], UNIT) == 0.0 and iou([], UNIT) == 0.0
    # a box's corners listed out of order ("bow-tie"): GEOS would raise a TopologyException on the
    # crossing ring; it is read as the box its corners span (convex hull), as the FAIR-1M tiler does
    bowtie = UNIT[[0, 2, 1, 3]]
    assert iou(bowtie, UNIT) == pytest.approx(1.0)
    assert iou(shift(bowtie, 0.5, 0), UNIT) == pytest.approx(1 / 3)
