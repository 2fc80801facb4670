"""Combine a cell's unit results into the dataset's number, as MESS defines it.

``single``: one unit. ``mean`` (PAXRay-4): the plain mean of the tasks' mIoUs. ``pool`` (k-fold
over the test set): the folds' confusion matrices are summed, so the result is the mIoU of the
whole test set with every image scored once by a model that did not train on it.
"""

from __future__ import annotations

from pathlib import Path

from mopeft.data.units import combine_rule
from mopeft.evaluation.metrics import ConfusionMatrix, combine_mean, pool
from mopeft.io import read_json


def combine_units(unit_dirs: list[Path], meta: dict, cell_dir: Path, context: dict) -> dict:
    """``unit_dirs`` hold metrics.json + confusion.npy + gates.npz; returns the cell metrics."""
    if not unit_dirs:
        raise ValueError("combine needs at least one unit evaluation folder")
    units = {}
    for d in unit_dirs:
        m = read_json(Path(d) / "metrics.json")
        units[m["unit"]] = m
    rule = combine_rule(meta)
    if rule == "pool":
        cm = pool(ConfusionMatrix.load(Path(d) / "confusion.npy") for d in unit_dirs)
        res = cm.compute()
        per_class = dict(zip(meta["classes"], res["per_class_iou"], strict=True))
        miou = res["miou"]
    elif rule == "mean":
        miou = combine_mean(list(units.values()))["miou"]
        per_class = {f"{u}/{c}": v for u, m in units.items() for c, v in m["per_class_iou"].items()}
    else:
        (only,) = units.values()
        miou, per_class = only["miou"], only["per_class_iou"]
    return {
        **context,
        "dataset": meta["dataset"],
        "miou": miou,
        "per_class_iou": per_class,
        "combine": rule,
        "units": {u: {"miou": m["miou"], "num_images": m["num_images"]} for u, m in units.items()},
        "num_images": sum(m["num_images"] for m in units.values()),
        "gates": [str((Path(d) / "gates.npz").resolve().relative_to(cell_dir.resolve())) for d in unit_dirs],
        "synthetic": bool(meta.get("synthetic", False)),
    }
