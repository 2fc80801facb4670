"""Masks2Boxes (thesis Appendix A): turn per-class segmentation output into scored oriented boxes.

Each connected component of a class's mask becomes one detection: its oriented box is the
minimum-area rectangle around the component's pixels, its horizontal box the pixel extent, and its
score the mean class probability inside it (times an image-level class-presence score when the
class MLP is available). Pixel (r, c) covers the square [c, c+1] x [r, r+1], the same convention the
FAIR-1M rasteriser uses (a pixel belongs to a polygon if its centre (c+0.5, r+0.5) is inside), so a
rasterised box comes back at the same place and size up to one pixel of boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mopeft.detection.rotated import min_area_rect

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)  # thin diagonal objects stay one component


@dataclass
class Box:
    class_id: int
    score: float
    poly: np.ndarray  # (4,2) oriented rectangle corners, pixel coordinates
    hbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) horizontal box
    num_pixels: int


def component_corners(mask: np.ndarray) -> np.ndarray:
    """Corners of the leftmost and rightmost pixel of every row of ``mask``.

    Their convex hull equals the hull of all pixel squares, at O(rows) instead of O(pixels) points.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 2))
    sub = mask[rows]
    left = sub.argmax(axis=1)
    right = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    pts = [
        np.stack([left, rows], 1), np.stack([left, rows + 1], 1),
        np.stack([right + 1, rows], 1), np.stack([right + 1, rows + 1], 1),
    ]
    return np.concatenate(pts).astype(np.float64)


HBox = tuple[int, int, int, int]


def mask_to_boxes(mask: np.ndarray, min_size: int = 1) -> list[tuple[np.ndarray, HBox, np.ndarray]]:
    """Connected components of a boolean mask -> [(oriented poly, hbox, component mask slice info)].

    The third element is the boolean mask of the component within its bounding slice, so callers can
    average probabilities over it without another labelling pass.
    """
    labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
    out = []
    for idx, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        comp = labels[sl] == idx
        if int(comp.sum()) < min_size:
            continue
        y0, x0 = sl[0].start, sl[1].start
        corners = component_corners(comp) + np.array([x0, y0], dtype=np.float64)
        poly = min_area_rect(corners)
        out.append((poly, (x0, y0, sl[1].stop, sl[0].stop), comp))
    return out


def masks_to_boxes(
    probs: np.ndarray,
    min_size: int = 4,
    presence: np.ndarray | None = None,
    class_ids: range | list[int] | None = None,
) -> list[Box]:
    """Per-class probabilities (K,H,W) -> detections for classes ``class_ids`` (default 1..K-1).

    A pixel belongs to class k where k is the arg-max (the semantic prediction), so components of
    different classes never overlap. ``presence`` (K,) in [0,1] multiplies the score: the class MLP's
    image-level belief that class k occurs at all.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"expected probabilities (K,H,W), got shape {probs.shape}")
    k_total = probs.shape[0]
    if presence is not None and np.asarray(presence).shape != (k_total,):
        raise ValueError(f"presence must have shape ({k_total},), got {np.asarray(presence).shape}")
    argmax = probs.argmax(axis=0)
    boxes: list[Box] = []
    for k in class_ids if class_ids is not None else range(1, k_total):
        mask = argmax == k
        if not mask.any():
            continue
        for poly, (x0, y0, x1, y1), comp in mask_to_boxes(mask, min_size):
            score = float(probs[k, y0:y1, x0:x1][comp].mean())
            if presence is not None:
                score *= float(presence[k])
            boxes.append(Box(k, score, poly, (x0, y0, x1, y1), int(comp.sum())))
    return boxes
