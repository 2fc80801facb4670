"""DOTA-style VOC average precision on oriented boxes (FAIR-1M / Table A.1 metric).

Protocol (DOTA devkit ``voc_eval`` with ``use_07_metric=False``, as JDet/mmrotate use for FAIR-1M):
per class, detections of all images are sorted by descending score; each detection is matched to
the GT box of the same image and class with the largest oriented IoU; it is a true positive if that
IoU is >= ``iou_thr`` and that GT box is not yet matched and not difficult, a false positive if the
IoU is below the threshold or the box was already matched (VOC: no fall-back to the second-best
box), and is ignored if the best box is difficult. Difficult boxes do not count as positives. As in
the devkit, the oriented IoU is computed only for pairs whose axis-aligned bounding boxes overlap
(the others have IoU 0).
AP = area under the precision/recall curve after replacing precision by its monotone (right-to-left
maximum) envelope, summed at every recall change ("all-point" interpolation, not VOC07's 11 points).
DOTA's devkit uses ``IoU > thr``; we use ``>=`` as specified for this project (differs only on
exact ties). Classes without non-difficult GT have undefined AP and are left out of every mean.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mopeft.detection import CATEGORIES, CLASSES, TABLE_A1_CLASSES, canonical_class
from mopeft.detection.rotated import iou_matrix
from mopeft.detection.xml_io import list_xml, read_xml
from mopeft.errors import InputError, MissingInput
from mopeft.io import read_json


@dataclass(frozen=True)
class Detection:
    image: str
    cls: str
    score: float
    poly: np.ndarray  # (4,2)


@dataclass(frozen=True)
class GTBox:
    poly: np.ndarray  # (4,2)
    difficult: bool = False


def voc_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """All-point interpolated AP (VOC2010+): area under the monotone precision envelope."""
    mrec = np.concatenate([[0.0], np.asarray(recall, float), [1.0]])
    mpre = np.concatenate([[0.0], np.asarray(precision, float), [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def _overlaps(dets: list[Detection], gt: Mapping[str, list[GTBox]]) -> list[np.ndarray]:
    """IoU of each detection with every GT box of its image (empty where the image has none).

    Computed image by image before the matching, since the IoUs do not depend on it: one
    vectorised :func:`iou_matrix` call per image (the DOTA devkit's axis-aligned pre-filter, then
    GEOS on the remaining pairs) instead of one Python call per detection/GT pair.
    """
    rows: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(dets):
        rows[d.image].append(i)
    out: list[np.ndarray] = [np.zeros(0)] * len(dets)
    for image, idx in rows.items():
        boxes = gt.get(image, [])
        if not boxes:
            continue
        matrix = iou_matrix([dets[i].poly for i in idx], [g.poly for g in boxes])
        for row, i in zip(matrix, idx, strict=True):
            out[i] = row
    return out


def class_ap(
    detections: Iterable[Detection], gt: Mapping[str, list[GTBox]], iou_thr: float = 0.5
) -> float | None:
    """AP of one class: ``gt`` maps image -> that class's GT boxes. None if no non-difficult GT."""
    npos = sum(not g.difficult for boxes in gt.values() for g in boxes)
    if npos == 0:
        return None
    dets = sorted(detections, key=lambda d: -d.score)  # stable: ties keep input order
    overlaps = _overlaps(dets, gt)
    matched = {img: np.zeros(len(boxes), dtype=bool) for img, boxes in gt.items()}
    tp = np.zeros(len(dets))
    fp = np.zeros(len(dets))
    for i, d in enumerate(dets):
        boxes = gt.get(d.image, [])
        if not boxes:
            fp[i] = 1
            continue
        j = int(np.argmax(overlaps[i]))
        if overlaps[i][j] >= iou_thr:
            if boxes[j].difficult:
                continue  # neither TP nor FP
            if not matched[d.image][j]:
                tp[i] = 1
                matched[d.image][j] = True
            else:
                fp[i] = 1
        else:
            fp[i] = 1
    tp_c, fp_c = np.cumsum(tp), np.cumsum(fp)
    recall = tp_c / npos
    precision = tp_c / np.maximum(tp_c + fp_c, np.finfo(float).eps)
    return voc_ap(recall, precision)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def evaluate(
    detections: list[Detection], gt: Mapping[str, list[tuple[str, GTBox]]], iou_thr: float = 0.5
) -> dict:
    """Per-class AP (percent), category means and both mAPs.

    ``gt`` maps image stem -> [(class, box)]. ``map`` is the mean over the 37 classes with GT;
    ``map_table_a1`` over the 34 Table A.1 classes with GT; ``category_means`` over each category's
    Table A.1 classes (the study's category means exclude the ``other-*`` classes; checked against
    paper_tables/fair1m_map.csv in the tests).
    """
    gt_by_class: dict[str, dict[str, list[GTBox]]] = defaultdict(lambda: defaultdict(list))
    for img, boxes in gt.items():
        for cls, box in boxes:
            gt_by_class[cls][img].append(box)
    det_by_class: dict[str, list[Detection]] = defaultdict(list)
    for d in detections:
        det_by_class[d.cls].append(d)
    per_class: dict[str, float | None] = {}
    for cls in CLASSES:
        ap = class_ap(det_by_class.get(cls, []), gt_by_class.get(cls, {}), iou_thr)
        per_class[cls] = None if ap is None else 100.0 * ap
    table_classes = set(TABLE_A1_CLASSES)
    return {
        "per_class_ap": per_class,
        "category_means": {
            cat: _mean(per_class[c] for c in names if c in table_classes) for cat, names in CATEGORIES.items()
        },
        "map": _mean(per_class.values()),
        "map_table_a1": _mean(per_class[c] for c in TABLE_A1_CLASSES),
        "classes_with_gt": sum(v is not None for v in per_class.values()),
        "iou_threshold": iou_thr,
        "unit": "percent",
    }


# ------------------------------------------------------------------------------------------ file I/O
def load_gt_dir(gt_dir: str | Path) -> dict[str, list[tuple[str, GTBox]]]:
    """Every ``*.xml`` / ``*.XML`` in ``gt_dir`` is one image (stem = image id); empty images count too."""
    gt_dir = Path(gt_dir)
    if not gt_dir.is_dir():
        raise MissingInput(f"{gt_dir}: GT folder not found")
    files = list_xml(gt_dir)
    if not files:
        raise InputError(f"{gt_dir}: no FAIR-1M .xml files")
    gt: dict[str, list[tuple[str, GTBox]]] = {}
    for f in files:
        ann = read_xml(f)
        gt[f.stem] = [(o.name, GTBox(o.poly, o.difficult)) for o in ann.objects]
    return gt


def load_detections(pred_json: str | Path, known_images: set[str] | None = None) -> list[Detection]:
    """Parse the detections JSON list, validating every record (errors name the file and index)."""
    pred_json = Path(pred_json)
    data = read_json(pred_json)
    if isinstance(data, dict) and "detections" in data:
        data = data["detections"]  # `mopeft detect` writes {"detections": [...], ...}
    if not isinstance(data, list):
        raise InputError(f"{pred_json}: expected a JSON list of detections")
    dets: list[Detection] = []
    for i, rec in enumerate(data):
        where = f"{pred_json}: detection {i}"
        if not isinstance(rec, dict) or not {"image", "class", "score", "poly"} <= rec.keys():
            raise InputError(f"{where}: needs keys image, class, score, poly")
        cls = canonical_class(str(rec["class"]))
        if cls is None:
            raise InputError(f"{where}: unknown class {rec['class']!r}")
        poly = rec["poly"]
        if not isinstance(poly, list) or len(poly) != 8:
            raise InputError(f"{where}: poly must be [x1,y1,...,x4,y4] (8 numbers), got {poly!r}")
        try:
            arr = np.asarray(poly, dtype=np.float64).reshape(4, 2)
            score = float(rec["score"])
        except (TypeError, ValueError):
            raise InputError(f"{where}: poly and score must be numbers") from None
        if not (np.isfinite(arr).all() and np.isfinite(score)):
            raise InputError(f"{where}: non-finite poly or score")
        image = str(rec["image"])
        if known_images is not None and image not in known_images:
            raise InputError(f"{where}: image {image!r} has no GT XML")
        dets.append(Detection(image, cls, score, arr))
    return dets


def score_detections(pred_json: str | Path, gt_dir: str | Path, iou_thr: float = 0.5) -> dict:
    """Score a detections JSON against a folder of FAIR-1M XMLs; see :func:`evaluate`."""
    gt = load_gt_dir(gt_dir)
    dets = load_detections(pred_json, set(gt))
    result = evaluate(dets, gt, iou_thr)
    result["num_images"] = len(gt)
    result["num_detections"] = len(dets)
    result["num_gt"] = sum(len(v) for v in gt.values())
    return result
