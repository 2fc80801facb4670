"""Score a folder of prediction PNGs against a folder of label PNGs (MESS protocol).

This lets anyone check our numbers, or score another model's outputs, without torch: files are
paired by stem, every pixel goes into one dataset-level confusion matrix, and each image's
per-class (tp, fp, fn) counts are kept for bootstrap intervals (``mopeft.evaluation.bootstrap``).
Anything that would make the score silently wrong (an unpaired file, a size mismatch, a value
outside the class range, a truncated file) is an error naming the offending file instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mopeft.errors import InputError, MissingInput
from mopeft.evaluation.bootstrap import tp_fp_fn
from mopeft.evaluation.metrics import IGNORE_INDEX, ConfusionMatrix

# Single-channel modes that hold class ids; RGB/RGBA would be colour-coded masks, not ids.
_ID_MODES = ("1", "L", "P", "I", "I;16", "I;16B", "I;16L")
PerImage = tuple[np.ndarray, np.ndarray]  # (N,) label file names, (N, K, 3) int64 tp/fp/fn


def read_id_png(path: Path) -> np.ndarray:
    """Decode a single-channel PNG of class ids fully (so truncation is detected here)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise InputError(f"{path}: not a PNG (its content is {img.format}); write class ids as PNG")
            img.load()
            if img.mode not in _ID_MODES:
                raise InputError(f"{path}: expected a single-channel class-id PNG, got mode {img.mode}")
            return np.asarray(img)
    except ValueError:
        raise
    except (OSError, SyntaxError) as exc:
        raise InputError(f"{path}: unreadable or truncated PNG ({exc})") from None


def _pngs_by_stem(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise MissingInput(f"{folder}: {role} folder not found")
    files = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() == ".png" and p.is_file()}
    if not files:
        raise InputError(f"{folder}: no .png files in the {role} folder")
    return files


def pair_files(pred_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """Pair prediction and label PNGs by stem; any file without its counterpart is an error."""
    preds = _pngs_by_stem(pred_dir, "prediction")
    gts = _pngs_by_stem(gt_dir, "ground-truth")
    missing_pred = sorted(set(gts) - set(preds))
    if missing_pred:
        raise MissingInput(
            f"{pred_dir / (missing_pred[0] + '.png')}: missing prediction for label {gts[missing_pred[0]]}"
            f" ({len(missing_pred)} label(s) without prediction)"
        )
    missing_gt = sorted(set(preds) - set(gts))
    if missing_gt:
        raise MissingInput(
            f"{gt_dir / (missing_gt[0] + '.png')}: missing label for prediction {preds[missing_gt[0]]}"
            f" ({len(missing_gt)} prediction(s) without label)"
        )
    return [(preds[s], gts[s]) for s in sorted(preds)]


def score_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    num_classes: int,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[dict[str, Any], ConfusionMatrix, PerImage]:
    """The MESS metrics of the folders (plus ``num_images``), the pooled matrix, and per image
    (label file name) the (K, 3) tp/fp/fn counts, as ``mopeft evaluate`` writes to per_image.npz."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    cm = ConfusionMatrix(num_classes, ignore_index)
    pairs = pair_files(pred_dir, gt_dir)
    per_image = []
    for pred_path, gt_path in pairs:
        pred = read_id_png(pred_path).astype(np.int64)
        gt = read_id_png(gt_path).astype(np.int64)
        if pred.shape != gt.shape:
            raise InputError(
                f"{pred_path}: size {pred.shape[::-1]} differs from label {gt_path} {gt.shape[::-1]}"
            )
        bad_gt = (gt >= num_classes) & (gt != ignore_index)
        if bad_gt.any():
            vals = np.unique(gt[bad_gt])[:10].tolist()
            raise InputError(
                f"{gt_path}: label values {vals} out of range"
                f" (classes 0..{num_classes - 1}, ignore {ignore_index})"
            )
        bad_pred = pred >= num_classes
        if bad_pred.any():
            vals = np.unique(pred[bad_pred])[:10].tolist()
            raise InputError(
                f"{pred_path}: prediction values {vals} out of range (classes 0..{num_classes - 1})"
            )
        image = ConfusionMatrix(num_classes, ignore_index)
        image.update(pred, gt)
        cm.add(image)
        per_image.append(tp_fp_fn(image.matrix))
    if cm.matrix.sum() == 0:
        raise InputError(f"{gt_dir}: every label pixel is ignore ({ignore_index}); nothing to score")
    result = cm.compute()
    result["num_images"] = len(pairs)
    result["ignore_index"] = ignore_index
    names = np.array([gt_path.name for _, gt_path in pairs])
    return result, cm, (names, np.stack(per_image))
