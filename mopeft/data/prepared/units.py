"""Training/evaluation units of a prepared dataset.

Most datasets are one unit (``main``). PAXRay-4 is four binary tasks (one unit each, scored as the
mean of their mIoUs, as MESS does). Datasets without a labelled train split (Dark Zurich, DRAM,
CryoNuSeg) use k-fold over the test set: unit ``fold{i}`` trains on the other folds and is tested
on fold i; the folds' confusion matrices are summed, so every test image is scored exactly once by
a model that never saw it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from mopeft.data.prepared.layout import kfold_assignment, list_pairs
from mopeft.errors import InputError
from mopeft.io import read_json

Pairs = list[tuple[Path, Path]]


@dataclass(frozen=True)
class UnitData:
    name: str
    train: Pairs
    test: Pairs
    num_classes: int
    classes: tuple[str, ...]


def combine_rule(meta: dict) -> Literal["single", "mean", "pool"]:
    """How unit results make the dataset's number: mean of task mIoUs, or pooled confusion."""
    if meta.get("tasks"):
        return "mean"
    if meta.get("train_split") == "none":
        return "pool"
    return "single"


def unit_names(meta: dict, kfold: int) -> list[str]:
    if meta.get("tasks"):
        return list(meta["tasks"])
    if meta.get("train_split") == "none":
        return [f"fold{i}" for i in range(kfold)]
    return ["main"]


def load_unit(dataset_dir: str | Path, unit: str, kfold: int = 2) -> UnitData:
    dataset_dir = Path(dataset_dir)
    meta = read_json(dataset_dir / "meta.json")
    names = unit_names(meta, kfold)
    if unit not in names:
        raise InputError(f"{dataset_dir}: unknown unit {unit!r}; this dataset has {names}")
    classes = tuple(meta["classes"])
    if meta.get("tasks"):
        root = dataset_dir / unit
        return UnitData(unit, list_pairs(root / "train"), list_pairs(root / "test"), len(classes), classes)
    if meta.get("train_split") == "none":
        pairs = list_pairs(dataset_dir / "test")
        folds = kfold_assignment([p[0].stem for p in pairs], kfold)
        i = int(unit.removeprefix("fold"))
        train = [p for p in pairs if folds[p[0].stem] != i]
        test = [p for p in pairs if folds[p[0].stem] == i]
        return UnitData(unit, train, test, len(classes), classes)
    return UnitData(
        unit, list_pairs(dataset_dir / "train"), list_pairs(dataset_dir / "test"), len(classes), classes
    )
