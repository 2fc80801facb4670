"""Planar geometry of oriented boxes: area, convex clipping, IoU, convex hull, minimum-area rectangle.

Written from scratch (no shapely at run time) because the DOTA-style AP calls the IoU millions of
times on tiny convex quadrilaterals, where a 30-line Sutherland–Hodgman clip is exact and cheap; the
tests check every function against shapely as an independent reference. Polygons are (N, 2) float
arrays of (x, y) vertices in either orientation; functions normalise to counter-clockwise.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def as_polygon(poly: np.ndarray | list[float]) -> np.ndarray:
    """Accept (N,2) or a flat [x1, y1, ..., xN, yN] sequence; return a float (N,2) array."""
    arr = np.asarray(poly, dtype=np.float64)
    if arr.ndim == 1:
        if arr.size % 2:
            raise ValueError(f"flat polygon needs an even number of coordinates, got {arr.size}")
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"polygon must be (N,2), got shape {arr.shape}")
    return arr


def signed_area(poly: np.ndarray) -> float:
    """Shoelace formula; positive for counter-clockwise vertices (y axis up)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def area(poly: np.ndarray | list[float]) -> float:
    p = as_polygon(poly)
    return abs(signed_area(p)) if len(p) >= 3 else 0.0


def ccw(poly: np.ndarray) -> np.ndarray:
    return poly[::-1].copy() if signed_area(poly) < 0 else poly


def clip_convex(subject: np.ndarray, clip: np.ndarray) -> np.ndarray:
    """Sutherland–Hodgman: the part of ``subject`` inside the convex polygon ``clip``.

    ``subject`` may be any simple polygon, ``clip`` must be convex. Returns (M,2), M may be 0.
    """
    out = ccw(as_polygon(subject))
    c = ccw(as_polygon(clip))
    for i in range(len(c)):
        if len(out) == 0:
            break
        a, b = c[i], c[(i + 1) % len(c)]
        edge = b - a
        # side > 0: left of the directed edge = inside for a counter-clockwise clip polygon
        side = edge[0] * (out[:, 1] - a[1]) - edge[1] * (out[:, 0] - a[0])
        inside = side >= -EPS
        prev = out[-1]
        prev_side, prev_in = side[-1], inside[-1]
        kept: list[np.ndarray] = []
        for p, s, pin in zip(out, side, inside, strict=True):
            if pin != prev_in:  # the edge prev->p crosses the clip line
                t = prev_side / (prev_side - s)
                kept.append(prev + t * (p - prev))
            if pin:
                kept.append(p)
            prev, prev_side, prev_in = p, s, pin
        out = np.asarray(kept, dtype=np.float64).reshape(-1, 2)
    return out


def intersection_area(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Area of the intersection of two convex polygons."""
    return area(clip_convex(as_polygon(a), as_polygon(b)))


def iou(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Intersection over union of two convex polygons (oriented boxes); 0 for degenerate input."""
    pa, pb = as_polygon(a), as_polygon(b)
    # Bounding-box rejection first: most GT/detection pairs of an image are far apart.
    if (pa[:, 0].max() <= pb[:, 0].min() or pb[:, 0].max() <= pa[:, 0].min()
            or pa[:, 1].max() <= pb[:, 1].min() or pb[:, 1].max() <= pa[:, 1].min()):
        return 0.0
    inter = intersection_area(pa, pb)
    union = area(pa) + area(pb) - inter
    return float(inter / union) if union > EPS else 0.0


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Andrew's monotone chain; counter-clockwise hull without collinear points."""
    pts = np.unique(as_polygon(points), axis=0)  # sorted by x, then y
    if len(pts) <= 2:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        chain: list[np.ndarray] = []
        for p in seq:
            while len(chain) >= 2:
                o, a = chain[-2], chain[-1]
                if (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0]) > EPS:
                    break
                chain.pop()
            chain.append(p)
        return chain

    lower, upper = half(pts), half(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1])


def min_area_rect(points: np.ndarray) -> np.ndarray:
    """Minimum-area enclosing rectangle as 4 counter-clockwise corners (rotating calipers).

    The optimal rectangle has one side collinear with a hull edge (Freeman & Shapira 1975), so we
    try every hull edge direction, project all hull points onto it and its normal, and keep the
    smallest extent product. Degenerate inputs (a point, a segment) give a zero-width rectangle.
    """
    hull = convex_hull(points)
    if len(hull) == 1:
        return np.repeat(hull, 4, axis=0)
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > EPS
    u = edges[keep] / lengths[keep, None]  # (E,2) unit edge directions
    v = np.stack([-u[:, 1], u[:, 0]], axis=1)  # normals
    pu, pv = u @ hull.T, v @ hull.T  # (E,N) projections
    areas = (pu.max(1) - pu.min(1)) * (pv.max(1) - pv.min(1))
    k = int(np.argmin(areas))
    u0, v0 = u[k], v[k]
    a0, a1, b0, b1 = pu[k].min(), pu[k].max(), pv[k].min(), pv[k].max()
    return np.array([a0 * u0 + b0 * v0, a1 * u0 + b0 * v0, a1 * u0 + b1 * v0, a0 * u0 + b1 * v0])


def clip_to_window(poly: np.ndarray, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Part of ``poly`` inside the axis-aligned window [x0,x1]x[y0,y1] (used when tiling)."""
    window = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    return clip_convex(as_polygon(poly), window)
