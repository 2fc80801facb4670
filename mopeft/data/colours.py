"""Colours for class-id masks: one fixed palette for prediction overlays and Fig. 4.1.

Why fixed and not a matplotlib colormap: ``mopeft predict --overlay`` runs without matplotlib, and
the same class must have the same colour in an overlay, in the figure and across runs. Numpy only.
"""

from __future__ import annotations

import colorsys

import numpy as np

IGNORE = 255
IGNORE_COLOUR = (0, 0, 0)  # unlabelled pixels (255) are black
# Distinct colours for the first classes (Kelly's / Glasbey-like order: neighbours contrast).
_BASE = (
    (128, 128, 128),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
    (170, 110, 40),
    (255, 250, 200),
    (128, 0, 0),
    (170, 255, 195),
    (128, 128, 0),
    (255, 215, 180),
    (0, 0, 128),
)


def class_colours(num_classes: int) -> np.ndarray:
    """(K, 3) uint8: the fixed colours first, then hues spaced by the golden ratio."""
    colours = list(_BASE[:num_classes])
    for i in range(len(colours), num_classes):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.65, 0.95)
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return np.array(colours, dtype=np.uint8).reshape(num_classes, 3)


def colourize(ids: np.ndarray, num_classes: int) -> np.ndarray:
    """HxW class ids (255 = ignore) -> HxWx3 uint8 colours."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[:num_classes] = class_colours(num_classes)
    table[IGNORE] = IGNORE_COLOUR
    return table[np.asarray(ids, dtype=np.uint8)]


def overlay(image: np.ndarray, ids: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """The image with each pixel's class colour blended in at ``alpha`` (ignored pixels untouched)."""
    colours = colourize(ids, num_classes).astype(np.float32)
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colours
    keep = (np.asarray(ids) == IGNORE)[..., None]
    return np.where(keep, image, blend.round()).astype(np.uint8)
