"""Semantic-segmentation metrics, exactly as MESS computes them.

MESS (``MESSSemSegEvaluator``, a subclass of detectron2's ``SemSegEvaluator``) accumulates ONE
(K+1)x(K+1) confusion matrix over the whole test set (rows = prediction, columns = ground truth)
and derives every number from it at the end. A per-image mean of IoUs is a different (and larger)
number, so we never average images. Details that matter for comparability:

* ground-truth pixels equal to ``ignore_index`` (255) never count, neither as a miss nor as a
  false positive (we drop them before counting; MESS puts them in column K and then never reads
  that column, which is the same thing);
* a prediction equal to K ("no class", only emitted by models with a no-object output) on a valid
  GT pixel counts as a miss of that GT class (MESS's change to detectron2: ``pos_gt`` sums all rows);
* IoU is defined for a class when it occurs in the GT *or* in the prediction; a class predicted but
  absent from the GT therefore scores IoU 0, and a class absent from both is skipped;
* background / "others" classes are ordinary classes and count in mIoU.

Values are reported in percent, like MESS and the paper tables.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mopeft.errors import InputError, MissingInput
from mopeft.io import atomic_path

IGNORE_INDEX = 255


def _as_numpy(array: Any, what: str) -> np.ndarray:
    """Accept numpy arrays or torch tensors (any device) without importing torch."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    array = np.asarray(array)
    if array.dtype.kind not in "iub":
        raise ValueError(f"{what} must hold integer class ids, got dtype {array.dtype}")
    return array


class ConfusionMatrix:
    """Dataset-level (K+1)x(K+1) confusion matrix; row K = "no class" predictions.

    Column K (ignored GT) stays zero because ignored pixels are excluded before counting.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if int(num_classes) < 1:
            raise InputError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= ignore_index < num_classes:
            raise InputError(
                f"ignore_index {ignore_index} collides with a class id (num_classes={num_classes})"
            )
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes + 1, self.num_classes + 1), dtype=np.int64)

    def update(self, pred: Any, gt: Any) -> None:
        """Add one image (or a batch) of predicted class ids and GT labels of the same shape."""
        pred = _as_numpy(pred, "prediction")
        gt = _as_numpy(gt, "ground truth")
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
        k = self.num_classes
        gt = gt.astype(np.int64).ravel()
        pred = pred.astype(np.int64).ravel()
        valid = gt != self.ignore_index
        gt, pred = gt[valid], pred[valid]
        if gt.size and (gt.min() < 0 or gt.max() >= k):
            bad = np.unique(gt[(gt < 0) | (gt >= k)])[:10].tolist()
            raise ValueError(
                f"ground truth has values {bad} outside 0..{k - 1} (and not ignore {self.ignore_index})"
            )
        if pred.size and (pred.min() < 0 or pred.max() > k):
            bad = np.unique(pred[(pred < 0) | (pred > k)])[:10].tolist()
            raise ValueError(f"prediction has values {bad} outside 0..{k} ({k} = no class)")
        counts = np.bincount(pred * (k + 1) + gt, minlength=(k + 1) ** 2)
        self.matrix += counts.reshape(k + 1, k + 1)

    def add(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Pool another matrix into this one (k-fold units are combined by summing matrices)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot add matrices with {other.num_classes} and {self.num_classes} classes")
        self.matrix += other.matrix
        return self

    def compute(self) -> dict[str, Any]:
        """MESS's ``evaluate()``: mIoU, per-class IoU (None where undefined), fwIoU, mACC, pACC in %."""
        k = self.num_classes
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)[:k]
        pos_gt = m.sum(axis=0)[:k]  # all rows: a "no class" prediction is a miss
        pos_pred = m[:k, :k].sum(axis=1)
        acc_valid = pos_gt > 0
        iou_valid = (pos_gt + pos_pred) > 0
        iou = np.full(k, np.nan)
        acc = np.full(k, np.nan)
        iou[iou_valid] = tp[iou_valid] / (pos_gt + pos_pred - tp)[iou_valid]
        acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
        total_gt = pos_gt.sum()
        nan = float("nan")
        miou = float(iou[iou_valid].mean()) if iou_valid.any() else nan
        macc = float(acc[acc_valid].mean()) if acc_valid.any() else nan
        fwiou = float((iou[acc_valid] * pos_gt[acc_valid] / total_gt).sum()) if total_gt else nan
        pacc = float(tp.sum() / total_gt) if total_gt else nan
        return {
            "miou": 100 * miou,
            "per_class_iou": [None if np.isnan(v) else 100 * float(v) for v in iou],
            "per_class_acc": [None if np.isnan(v) else 100 * float(v) for v in acc],
            "fwiou": 100 * fwiou,
            "macc": 100 * macc,
            "pacc": 100 * pacc,
            "num_pixels": int(total_gt),
            "num_classes": k,
            "unit": "percent",
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the raw matrix as .npy atomically (the pipeline re-pools folds from it)."""
        with atomic_path(path, suffix=".npy.tmp") as tmp, open(tmp, "wb") as f:
            np.save(f, self.matrix)

    @classmethod
    def load(cls, path: str | os.PathLike[str], ignore_index: int = IGNORE_INDEX) -> ConfusionMatrix:
        """Read a matrix written by ``save``; K is the matrix size minus one."""
        path = Path(path)
        try:
            matrix = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise MissingInput(f"{path}: file not found") from None
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a valid .npy confusion matrix ({exc})") from None
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
            raise InputError(f"{path}: expected a square (K+1)x(K+1) matrix, got shape {matrix.shape}")
        if matrix.dtype.kind not in "iu" or (matrix < 0).any():
            raise InputError(f"{path}: confusion matrix must hold non-negative integer counts")
        cm = cls(matrix.shape[0] - 1, ignore_index)
        cm.matrix = matrix.astype(np.int64)
        return cm


def pool(matrices: Iterable[ConfusionMatrix]) -> ConfusionMatrix:
    """Sum matrices (k-fold units of a train-less dataset form ONE test set, so pixels pool)."""
    matrices = list(matrices)
    if not matrices:
        raise ValueError("pool() needs at least one confusion matrix")
    out = ConfusionMatrix(matrices[0].num_classes, matrices[0].ignore_index)
    for m in matrices:
        out.add(m)
    return out


def combine_mean(metrics_list: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """PAXRay-4: plain unweighted mean of the sub-tasks' mIoU (``mess_evaluation.py``)."""
    if not metrics_list:
        raise ValueError("combine_mean() needs at least one metrics dict")
    mious = []
    for i, m in enumerate(metrics_list):
        if "miou" not in m:
            raise ValueError(f"metrics #{i} has no 'miou' key")
        mious.append(float(m["miou"]))
    return {"miou": float(np.mean(mious)), "parts_miou": mious, "combination": "mean", "unit": "percent"}
