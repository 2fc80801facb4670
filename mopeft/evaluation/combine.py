"""Combine a cell's unit results into the dataset's number, as MESS defines it.

``single``: one unit. ``mean`` (PAXRay-4): the plain mean of the tasks' mIoUs. ``pool`` (k-fold
over the test set): the folds' confusion matrices are summed, so the result is the mIoU of the
whole test set with every image scored once by a model that did not train on it.

Both only mean something when the units are exactly the dataset's: all four PAXRay-4 tasks, every
fold once. So the unit list is checked against the prepared dataset's ``meta.json`` first (missing,
duplicated or foreign units, class names and matrix sizes that are not the dataset's), and every
refusal names the file at fault.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from mopeft.data.folder.spec import DEFAULT_DOMAIN
from mopeft.data.prepared.units import combine_rule, unit_names
from mopeft.environment import record_environment
from mopeft.errors import InputError
from mopeft.evaluation.metrics import ConfusionMatrix, combine_mean, pool
from mopeft.io import read_json

Units = dict[str, tuple[Path, dict]]  # unit name -> (its metrics.json, its content)


def load_units(unit_dirs: list[Path]) -> Units:
    """Each folder's metrics.json, keyed by the unit it says it is; a unit given twice is refused."""
    if not unit_dirs:
        raise ValueError("combine needs at least one unit evaluation folder")
    units: Units = {}
    for d in unit_dirs:
        path = Path(d) / "metrics.json"
        metrics = read_json(path)
        name = metrics.get("unit")
        if not isinstance(name, str) or not name:
            raise InputError(f"{path}: has no 'unit' name; was it written by `mopeft evaluate`?")
        if name in units:
            raise InputError(f"{path}: unit {name!r} is given twice (also {units[name][0]}); list it once")
        units[name] = (path, metrics)
    return units


def check_units(units: Units, meta: dict, meta_path: str | Path, kfold: int) -> None:
    """The units must be exactly the dataset's (all tasks / folds 0..k-1, or ``main``), each
    evaluated with the dataset's class list."""
    expected = unit_names(meta, kfold)
    dataset = meta.get("dataset", "?")
    if missing := [u for u in expected if u not in units]:
        hint = f" (k-fold with --kfold {kfold})" if meta.get("train_split") == "none" else ""
        raise InputError(
            f"{meta_path}: {dataset} is combined from units {expected}{hint}; missing {missing} "
            f"(given: {sorted(units)})"
        )
    if extra := [u for u in units if u not in expected]:
        path = units[extra[0]][0]
        raise InputError(f"{path}: unit {extra[0]!r} is not a unit of {dataset} ({meta_path}: {expected})")
    classes = list(meta["classes"])
    for name, (path, metrics) in units.items():
        # `classes` is the ordered list evaluate scored with (per_class_iou's keys are sorted on disk).
        got = list(metrics["classes"])
        if got != classes:
            raise InputError(
                f"{path}: unit {name!r} was scored with {len(got)} classes {got[:4]}, but {meta_path} "
                f"lists {len(classes)} {classes[:4]}; it was evaluated on another dataset or class list"
            )


def _pooled(units: Units, classes: list[str], meta_path: str | Path) -> ConfusionMatrix:
    matrices = []
    for path, _ in units.values():
        cm = ConfusionMatrix.load(path.parent / "confusion.npy")
        if cm.num_classes != len(classes):
            raise InputError(
                f"{path.parent / 'confusion.npy'}: a {cm.num_classes}-class confusion matrix, but "
                f"{meta_path} lists {len(classes)} classes"
            )
        matrices.append(cm)
    return pool(matrices)


def combine_units(
    unit_dirs: list[Path],
    meta: dict,
    cell_dir: Path,
    context: dict,
    kfold: int = 2,
    meta_path: str | Path = "meta.json",
) -> dict:
    """``unit_dirs`` hold metrics.json + confusion.npy + gates.npz; returns the cell metrics."""
    units = load_units(unit_dirs)
    check_units(units, meta, meta_path, kfold)
    rule = combine_rule(meta)
    metrics = {u: m for u, (_, m) in units.items()}
    if rule == "pool":
        res = _pooled(units, list(meta["classes"]), meta_path).compute()
        per_class = dict(zip(meta["classes"], res["per_class_iou"], strict=True))
        miou = res["miou"]
    elif rule == "mean":
        miou = combine_mean(list(metrics.values()))["miou"]
        per_class = {f"{u}/{c}": v for u, m in metrics.items() for c, v in m["per_class_iou"].items()}
    else:
        (only,) = metrics.values()
        miou, per_class = only["miou"], only["per_class_iou"]
    return {
        **context,
        "dataset": meta["dataset"],
        # The tables place a dataset outside the study's list by its meta.json's domain and name.
        "domain": meta.get("domain") or DEFAULT_DOMAIN,
        "name": meta.get("name") or meta["dataset"],
        "miou": miou,
        "per_class_iou": per_class,
        "combine": rule,
        "units": {u: {"miou": m["miou"], "num_images": m["num_images"]} for u, m in metrics.items()},
        "num_images": sum(m["num_images"] for m in metrics.values()),
        "gates": [str((Path(d) / "gates.npz").resolve().relative_to(cell_dir.resolve())) for d in unit_dirs],
        "synthetic": bool(meta.get("synthetic", False)),
        # Where the units were evaluated (what the tables' provenance lists; None: a unit written
        # before environments were recorded), and where they were combined.
        "unit_environments": _distinct(m.get("environment") for m in metrics.values()),
        "environment": record_environment(cell_dir),
    }


def _distinct(records: Iterable[dict | None]) -> list[dict | None]:
    """The distinct records, in first-seen order (equal units list their common record once)."""
    out: list[dict | None] = []
    for r in records:
        if r not in out:
            out.append(r)
    return out
