"""The oriented IoU and the class AP as computed before the shapely IoU: the independent references of
tests/test_rotated_iou.py and tests/test_detection_ap.py, and the "old" side of
scripts/bench_rotated_iou.py (one copy, so the benchmark times exactly what the tests compare)."""

from __future__ import annotations

import numpy as np

from mopeft.detection.ap import voc_ap
from mopeft.detection.rotated import area, clip_convex


def box(cx, cy, w, h, angle):
    """The corners of a w x h box centred at (cx, cy), rotated by ``angle`` radians."""
    c, s = np.cos(angle), np.sin(angle)
    corners = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return corners @ np.array([[c, s], [-s, c]]) + [cx, cy]


def clip_iou(a, b):
    """The IoU as computed before shapely: bounding-box rejection, Sutherland–Hodgman clip, shoelace."""
    pa, pb = np.asarray(a, float).reshape(-1, 2), np.asarray(b, float).reshape(-1, 2)
    if (
        pa[:, 0].max() <= pb[:, 0].min()
        or pb[:, 0].max() <= pa[:, 0].min()
        or pa[:, 1].max() <= pb[:, 1].min()
        or pb[:, 1].max() <= pa[:, 1].min()
    ):
        return 0.0
    inter = area(clip_convex(pa, pb))
    union = area(pa) + area(pb) - inter
    return float(inter / union) if union > 1e-12 else 0.0


def reference_class_ap(detections, gt, iou_thr=0.5):
    """class_ap as it was before the shapely IoU: one clip_iou call per detection/GT pair."""
    npos = sum(not g.difficult for boxes in gt.values() for g in boxes)
    if npos == 0:
        return None
    dets = sorted(detections, key=lambda d: -d.score)
    matched = {img: np.zeros(len(boxes), dtype=bool) for img, boxes in gt.items()}
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for i, d in enumerate(dets):
        boxes = gt.get(d.image, [])
        if not boxes:
            fp[i] = 1
            continue
        overlaps = np.array([clip_iou(d.poly, g.poly) for g in boxes])
        j = int(np.argmax(overlaps))
        if overlaps[j] >= iou_thr:
            if boxes[j].difficult:
                continue
            if not matched[d.image][j]:
                tp[i], matched[d.image][j] = 1, True
            else:
                fp[i] = 1
        else:
            fp[i] = 1
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    return voc_ap(tp_c / npos, tp_c / np.maximum(tp_c + fp_c, np.finfo(float).eps))
