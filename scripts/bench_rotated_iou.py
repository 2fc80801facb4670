"""Oriented-box IoU and DOTA-style AP: the hand-written clipper (before) vs shapely 2 (now).

Why: the AP evaluation computes an oriented IoU for every detection/GT pair of an image, and the
hand-written Sutherland–Hodgman clip (pure Python loops over vertices, one call per pair, no
pre-filter) was the cost of ``mopeft score-detections``. ``mopeft.detection.rotated`` now takes the
DOTA devkit's axis-aligned pre-filter and sends the remaining pairs to GEOS in one vectorised call.
This script prints, on this machine, single-threaded (GEOS and this code use one core):

(a) per pair, on random rotated boxes (the tests' distribution: about a third overlap) and on
    pairs whose bounding boxes all overlap (the geometry without the pre-filter's help): the old
    function, the new scalar ``iou`` (one pair per call) and the new vectorised ``iou_pairs``;
(b) a realistic AP evaluation (FAIR-1M-like tiles: clustered rotated objects of several classes,
    0-2 jittered detections per object, random false positives): the old ``class_ap`` (one old IoU
    call per detection/GT pair) vs the new ``evaluate``; per-class AP of both, max difference.

Each figure is the median of ``--reps`` interleaved repetitions (old and new alternate, so load
drift hits both). No asserts: the figures are printed; equality is asserted by the tests
(tests/test_rotated_iou.py, tests/test_detection_ap.py).

    .venv/bin/python scripts/bench_rotated_iou.py [--pairs 5000] [--images 200] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from mopeft.detection import ap
from mopeft.detection.ap import Detection, GTBox, evaluate
from mopeft.detection.rotated import iou, iou_pairs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from detection_reference import box, reference_class_ap
from detection_reference import clip_iou as old_iou


def old_evaluate(detections: list[Detection], gt: Mapping[str, list[tuple[str, GTBox]]]) -> dict:
    """``evaluate`` with the old ``class_ap`` (the grouping and means are unchanged code)."""
    new = ap.class_ap
    ap.class_ap = reference_class_ap
    try:
        return evaluate(detections, gt)
    finally:
        ap.class_ap = new


def random_pairs(
    rng: np.random.Generator, n: int, overlapping: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Rotated boxes in [0, 10]²; ``overlapping``: only pairs whose bounding boxes overlap."""
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    while len(a) < n:
        p, q = (box(*rng.uniform(0, 10, 2), *rng.uniform(0.5, 6, 2), rng.uniform(0, np.pi)) for _ in "pq")
        lo, hi = np.maximum(p.min(0), q.min(0)), np.minimum(p.max(0), q.max(0))
        if not overlapping or (hi > lo).all():
            a.append(p)
            b.append(q)
    return np.stack(a), np.stack(b)


def per_pair(label: str, a: np.ndarray, b: np.ndarray, reps: int) -> None:
    """Print µs per pair of the old IoU, the new scalar ``iou`` and ``iou_pairs``, and their difference."""
    pairs = list(zip(a, b, strict=True))
    old_v = np.array([old_iou(p, q) for p, q in pairs])
    scalar_v = np.array([iou(p, q) for p, q in pairs])
    new_v = iou_pairs(a, b)
    t = interleaved(
        {
            "old": lambda: [old_iou(p, q) for p, q in pairs],
            "new iou (one pair per call)": lambda: [iou(p, q) for p, q in pairs],
            "new iou_pairs (vectorised)": lambda: iou_pairs(a, b),
        },
        reps,
    )
    print(f"{len(a)} {label}, {int((old_v > 0).sum())} with IoU > 0; median of {reps} interleaved runs:")
    for name, sec in t.items():
        print(f"    {name:<30} {1e6 * sec / len(a):8.2f} µs per pair   ({t['old'] / sec:5.1f}x vs old)")
    print(
        f"    max |new - old| = {np.abs(new_v - old_v).max():.1e} (vectorised), "
        f"{np.abs(scalar_v - old_v).max():.1e} (scalar)"
    )


CLASSES = (
    "Small Car",
    "Van",
    "Dump Truck",
    "Bus",
    "Cargo Truck",
    "Motorboat",
    "Tennis Court",
    "Baseball Field",
)


def scene(rng: np.random.Generator, images: int) -> tuple[list[Detection], dict]:
    """FAIR-1M-like 1000² tiles: per image 1-5 classes, each a cluster of 0-40 rotated objects."""
    gt: dict[str, list[tuple[str, GTBox]]] = {}
    dets: list[Detection] = []
    for k in range(images):
        img = f"tile{k}"
        gt[img] = []
        for cls in rng.choice(CLASSES, size=int(rng.integers(1, 6)), replace=False):
            centre = rng.uniform(150, 850, 2)
            for _ in range(int(rng.integers(0, 41))):
                cx, cy = centre + rng.normal(0, 120, 2)
                w, h = rng.uniform(10, 60), rng.uniform(5, 25)
                angle = rng.uniform(0, np.pi)
                gt[img].append((str(cls), GTBox(box(cx, cy, w, h, angle), bool(rng.random() < 0.05))))
                for _ in range(int(rng.integers(0, 3))):
                    dx, dy = rng.normal(0, 0.1, 2) * (w, h)
                    size = rng.uniform(0.8, 1.2, 2) * (w, h)
                    poly = box(cx + dx, cy + dy, *size, angle + rng.normal(0, 0.15))
                    dets.append(Detection(img, str(cls), float(rng.random()), poly))
        for _ in range(int(rng.integers(0, 30))):
            cx, cy = rng.uniform(0, 1000, 2)
            poly = box(cx, cy, rng.uniform(10, 60), rng.uniform(5, 25), rng.uniform(0, np.pi))
            dets.append(Detection(img, str(rng.choice(CLASSES)), float(rng.random()), poly))
    return dets, gt


def interleaved(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median seconds of each function over ``reps`` rounds, the order rotated every round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(v) for name, v in times.items()}


def candidate_pairs(dets: list[Detection], gt: Mapping[str, list[tuple[str, GTBox]]]) -> tuple[int, int]:
    """(detection/GT pairs the old code computed an IoU for, pairs left after the pre-filter)."""
    total = kept = 0
    for d in dets:
        same = [b.poly for c, b in gt[d.image] if c == d.cls]
        if not same:
            continue
        boxes = np.stack(same)
        total += len(boxes)
        lo, hi = d.poly.min(0), d.poly.max(0)
        overlap = (np.minimum(hi, boxes.max(1)) - np.maximum(lo, boxes.min(1)) > 0).all(1)
        kept += int(overlap.sum())
    return total, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=5000)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    for label, (a, b) in (
        ("random pairs (the tests' distribution)", random_pairs(rng, args.pairs)),
        ("pairs with overlapping bounding boxes", random_pairs(rng, args.pairs, overlapping=True)),
    ):
        per_pair(label, a, b, args.reps)

    dets, gt = scene(rng, args.images)
    total, kept = candidate_pairs(dets, gt)
    res_old, res_new = old_evaluate(dets, gt), evaluate(dets, gt)
    t = interleaved({"old": lambda: old_evaluate(dets, gt), "new": lambda: evaluate(dets, gt)}, args.reps)
    diffs = [
        abs(res_new["per_class_ap"][c] - res_old["per_class_ap"][c])
        for c in res_old["per_class_ap"]
        if res_old["per_class_ap"][c] is not None
    ]
    print(
        f"AP evaluation: {args.images} tiles, {sum(len(v) for v in gt.values())} GT boxes, "
        f"{len(dets)} detections, {len(diffs)} classes with GT; {total} same-class detection/GT "
        f"pairs, {kept} with overlapping axis-aligned boxes; median of {args.reps} interleaved runs:"
    )
    for name, sec in t.items():
        print(f"    {name:<4} evaluate {sec:8.3f} s   ({t['old'] / sec:5.1f}x vs old)")
    print(
        f"    mAP old {res_old['map']:.6f}, new {res_new['map']:.6f}; "
        f"max per-class |AP new - AP old| = {max(diffs):.1e} (percent)"
    )


if __name__ == "__main__":
    main()
