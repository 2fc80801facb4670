"""`mopeft combine` refuses unit lists that are not exactly the dataset's, naming the file at fault."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import combine_args

from mopeft.cli import main
from mopeft.evaluation.metrics import ConfusionMatrix
from mopeft.io import write_json

PAXRAY_TASKS = ["lungs", "bones", "mediastinum", "diaphragm"]



def unit_eval(cell: Path, unit: str, classes: list[str], matrix_classes: int | None = None) -> Path:
    """A unit's eval folder as `mopeft evaluate` writes it (metrics.json, confusion.npy, gates.npz)."""
    d = cell / "units" / unit / "eval"
    d.mkdir(parents=True)
    cm = ConfusionMatrix(matrix_classes or len(classes))
    cm.update(np.array([[0, 1, 1, 0]]), np.array([[0, 1, 0, 0]]))
    cm.save(d / "confusion.npy")
    res = cm.compute()
    per_class = dict(zip(classes, res["per_class_iou"], strict=False))
    metrics = {
        "unit": unit,
        "miou": res["miou"],
        "num_images": 1,
        "classes": classes,
        "per_class_iou": per_class,
        "seed": 0,
    }
    write_json(d / "metrics.json", metrics)  # as evaluate writes it: keys sorted
    np.savez(d / "gates.npz")
    return d


def write_meta(tmp_path: Path, **meta) -> Path:
    path = tmp_path / "prepared" / meta["dataset"] / "meta.json"
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps({"classes": ["others", "thing"], "tasks": [], "train_split": "official", **meta})
    )
    return path


def combine(capsys, units: list[Path], meta: Path, out: Path, *extra: str) -> tuple[int, str]:
    rc = main([*combine_args(units, meta, out), *extra])
    err = capsys.readouterr().err
    assert rc == 0 or err.count("\n") == 1, err  # one clean line, no traceback
    return rc, err


@pytest.fixture
def cell(tmp_path: Path) -> Path:
    return tmp_path / "results" / "cells" / "ds" / "lora" / "default" / "seed0"


def test_all_paxray_tasks_are_required(tmp_path, cell, capsys) -> None:
    meta = write_meta(tmp_path, dataset="paxray4", tasks=PAXRAY_TASKS)
    units = [unit_eval(cell, t, ["others", "thing"]) for t in PAXRAY_TASKS]
    rc, err = combine(capsys, units[:3], meta, cell / "metrics.json")
    assert rc == 2 and str(meta) in err and "missing ['diaphragm']" in err
    assert not (cell / "metrics.json").exists()
    rc, err = combine(capsys, units, meta, cell / "metrics.json")
    assert rc == 0, err
    out = json.loads((cell / "metrics.json").read_text())
    assert sorted(out["units"]) == sorted(PAXRAY_TASKS) and out["combine"] == "mean"


def test_each_fold_exactly_once(tmp_path, cell, capsys) -> None:
    meta = write_meta(tmp_path, dataset="dark_zurich", train_split="none")
    folds = [unit_eval(cell, f"fold{i}", ["others", "thing"]) for i in range(3)]
    twice = cell / "units" / "fold0-again" / "eval"
    twice.parent.mkdir(parents=True)
    (twice.parent / "eval").symlink_to(folds[0])
    rc, err = combine(capsys, [folds[0], folds[1], twice], meta, cell / "metrics.json")
    assert rc == 2 and "unit 'fold0' is given twice" in err and str(twice / "metrics.json") in err
    rc, err = combine(capsys, folds[:2], meta, cell / "metrics.json", "--kfold", "3")
    assert rc == 2 and "missing ['fold2']" in err and "--kfold 3" in err and str(meta) in err
    rc, err = combine(capsys, folds, meta, cell / "metrics.json")  # --kfold 2: fold2 is foreign
    assert rc == 2 and str(folds[2] / "metrics.json") in err and "'fold2' is not a unit of dark_zurich" in err
    rc, err = combine(capsys, folds, meta, cell / "metrics.json", "--kfold", "3")
    assert rc == 0, err
    assert json.loads((cell / "metrics.json").read_text())["combine"] == "pool"


def test_class_names_and_matrix_size_must_be_the_datasets(tmp_path, cell, capsys) -> None:
    meta = write_meta(tmp_path, dataset="dark_zurich", train_split="none")
    wrong_names = [unit_eval(cell, "fold0", ["others", "thing"]), unit_eval(cell, "fold1", ["bg", "tool"])]
    rc, err = combine(capsys, wrong_names, meta, cell / "metrics.json")
    assert rc == 2 and str(wrong_names[1] / "metrics.json") in err and "another dataset" in err
    other = tmp_path / "other"
    wrong_k = [
        unit_eval(other, "fold0", ["others", "thing"]),
        unit_eval(other, "fold1", ["others", "thing"], 3),
    ]
    rc, err = combine(capsys, wrong_k, meta, other / "metrics.json")
    assert rc == 2 and str(wrong_k[1] / "confusion.npy") in err and "3-class confusion matrix" in err
    assert "zip()" not in err


def test_single_unit_dataset_needs_main(tmp_path, cell, capsys) -> None:
    meta = write_meta(tmp_path, dataset="kvasir_instrument")
    rc, err = combine(capsys, [unit_eval(cell, "fold0", ["others", "thing"])], meta, cell / "metrics.json")
    assert rc == 2 and "missing ['main']" in err
    rc, err = combine(
        capsys, [unit_eval(tmp_path / "c2", "main", ["others", "thing"])], meta, tmp_path / "m.json"
    )
    assert rc == 0, err


def test_class_order_is_the_datasets_not_the_sorted_json_keys(tmp_path):
    """metrics.json is written with sorted keys; a class list that is not alphabetical still matches."""
    meta = write_meta(tmp_path, dataset="toy", classes=["zebra", "apple"])
    cell = tmp_path / "cell"
    unit_eval(cell, "main", ["zebra", "apple"])
    out = cell / "metrics.json"
    assert main(combine_args([cell / "units/main/eval"], meta, out)) == 0
    assert list(json.loads(out.read_text())["per_class_iou"]) == ["apple", "zebra"]


def test_the_cell_records_its_datasets_domain_and_name(tmp_path, cell, capsys) -> None:
    """The main tables place a dataset outside the study's list by these (a folder dataset's
    meta.json says "Custom"; one without a domain defaults to it)."""
    meta = write_meta(tmp_path, dataset="shapes", domain="Custom", name="Shapes (generated)")
    rc, err = combine(capsys, [unit_eval(cell, "main", ["others", "thing"])], meta, cell / "metrics.json")
    assert rc == 0, err
    out = json.loads((cell / "metrics.json").read_text())
    assert (out["domain"], out["name"]) == ("Custom", "Shapes (generated)")
    bare = write_meta(tmp_path / "b", dataset="leaves")
    other = tmp_path / "other"
    rc, err = combine(capsys, [unit_eval(other, "main", ["others", "thing"])], bare, other / "metrics.json")
    assert rc == 0, err
    assert json.loads((other / "metrics.json").read_text())["domain"] == "Custom"
