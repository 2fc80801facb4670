"""Generated "natural" scenes for pretraining the tiny SAM: textured objects on textured ground.

Why these images: the tiny architecture cannot load SAM's real weights, and a randomly initialised
encoder has near-zero gradients, so fine-tuning it says nothing about the methods. SAM itself was
pre-trained to segment *objects*, whatever their class. These scenes ask the same of the tiny model:
one to four closed shapes (ellipses, rotated rectangles, triangles) with their own colour and
texture (flat, stripes, checker, speckle) over a smooth background, and the class-agnostic union of
the shapes as the mask. The benchmark's miniatures encode classes by colour in blocks and blobs, so
they keep a domain shift from this task, as the real datasets do from SA-1B.

Each scene is a pure function of ``(seed, index)``, so pretraining is reproducible item by item.
:func:`labelled_scene` returns the same image with a per-pixel shape-type label (background,
ellipse, rectangle, triangle): the demo's generated folder dataset, a 4-class task from the same
random stream, so it adds no second generator to keep in step.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("ellipse", "rectangle", "triangle")
# Class names of labelled_scene's labels: id 0 is the ground, id i the shape SHAPES[i - 1].
SCENE_CLASSES = ("background", *SHAPES)
TEXTURES = ("flat", "stripes", "checker", "speckle")


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1): a coarse random grid, bilinearly upsampled to ``size``²."""
    grid = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i, f = t.astype(int), t - t.astype(int)
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _shape_mask(
    rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray
) -> tuple[int, np.ndarray]:
    """(index into SHAPES, bool mask) of one random shape."""
    kind_id = int(rng.integers(len(SHAPES)))
    kind = SHAPES[kind_id]
    cy, cx = rng.uniform(0.2, 0.8, size=2) * size
    ry, rx = rng.uniform(0.08, 0.22, size=2) * size
    angle = rng.uniform(0, np.pi)
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    if kind == "ellipse":
        return kind_id, (u / rx) ** 2 + (v / ry) ** 2 <= 1
    if kind == "rectangle":
        return kind_id, (np.abs(u) <= rx) & (np.abs(v) <= ry)
    # Triangle: inside three half-planes through random vertices around the centre.
    angles = angle + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, size=3)
    radius = max(rx, ry) * 1.3
    vy, vx = cy + radius * np.sin(angles), cx + radius * np.cos(angles)
    inside = np.ones_like(yy, dtype=bool)
    for a in range(3):
        b = (a + 1) % 3
        cross = (vx[b] - vx[a]) * (yy - vy[a]) - (vy[b] - vy[a]) * (xx - vx[a])
        inside &= cross >= 0
    return kind_id, inside


def _texture(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A (size, size) modulation in [-1, 1] for one object's surface."""
    kind = TEXTURES[rng.integers(len(TEXTURES))]
    if kind == "flat":
        return np.zeros((size, size))
    if kind == "stripes":
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 9)
        return np.sign(np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period))
    if kind == "checker":
        period = rng.integers(3, 8)
        return ((yy // period + xx // period) % 2) * 2.0 - 1
    return rng.uniform(-1, 1, size=(size, size))


def labelled_scene(seed: int, index: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of stream ``seed``: the RGB uint8 image of :func:`scene` and a uint8 label
    whose pixels hold the type of the shape on top (``SCENE_CLASSES``; 0 = background)."""
    rng = np.random.default_rng([seed, index])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    # Background: two colours blended by a smooth field, plus faint pixel noise.
    c0, c1 = rng.uniform(0, 255, size=(2, 3))
    field = _smooth_field(rng, size, int(rng.integers(2, 5)))[..., None]
    image = c0 * (1 - field) + c1 * field
    label = np.zeros((size, size), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        kind_id, shape = _shape_mask(rng, size, yy, xx)
        if not shape.any():
            continue
        # An object colour far from the background under it, so every object has a visible boundary.
        under = image[shape].mean(axis=0)
        colour = rng.uniform(0, 255, size=3)
        for _attempt in range(8):
            if np.abs(colour - under).sum() >= 150:
                break
            colour = rng.uniform(0, 255, size=3)
        amplitude = rng.uniform(15, 45)
        surface = colour + amplitude * _texture(rng, size, yy, xx)[..., None]
        image[shape] = surface[shape]
        label[shape] = kind_id + 1  # a later shape covers an earlier one, in the image and the label
    image = image + rng.normal(0, 6, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), label


def scene(seed: int, index: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``index`` of stream ``seed``: an RGB uint8 image (size, size, 3) and its bool foreground
    mask (the class-agnostic union of the shapes, what the tiny SAM is pretrained on)."""
    image, label = labelled_scene(seed, index, size)
    return image, label > 0


def scenes(seed: int, indices: range | list[int], size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A batch: images (N, size, size, 3) uint8 and masks (N, size, size) bool."""
    pairs = [scene(seed, i, size) for i in indices]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
