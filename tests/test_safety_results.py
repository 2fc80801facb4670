"""Results that cannot lie quietly (issue 11): evaluate/detect refuse a model trained on another
dataset (key and class names are in the checkpoint), and a table refuses duplicated cells and cells
whose metrics disagree with their folder, naming the files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import write_blocky_dataset

from mopeft.cli import main
from mopeft.methods.checkpoint import read_checkpoint
from mopeft.report.tables import load_cells

FAST = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]


def _train(data: Path, out: Path, steps: int = 1) -> list[str]:
    """`mopeft train` of a random-init tiny LoRA model (the tests' quickest)."""
    return ["train", "--data", str(data), "--method", "lora", "--steps", str(steps), *FAST, "--out", str(out)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A 1-step tiny model trained on dataset key "toy" (3 classes), and its prepared folder."""
    root = tmp_path_factory.mktemp("trained")
    ds = write_blocky_dataset(root / "prepared", n_train=2, n_test=2, key="toy")
    out = root / "cell"
    assert main(_train(ds, out)) == 0
    return out / "model.safetensors", ds


def test_checkpoint_records_the_dataset_and_its_classes(trained):
    model, _ = trained
    cfg = read_checkpoint(model)["config"]
    assert cfg["dataset"] == "toy" and cfg["classes"] == ["c0", "c1", "c2"]


def test_evaluate_refuses_a_model_trained_on_another_dataset(trained, tmp_path, capsys):
    """Same class count (only K was checked): the number would look plausible and mean nothing."""
    model, _ = trained
    other = write_blocky_dataset(tmp_path / "prepared", n_train=1, n_test=1, key="other")
    argv = ["evaluate", "--model", str(model), "--data", str(other), "--out", str(tmp_path / "e")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(model) in err and str(other / "meta.json") in err and "'toy'" in err and "'other'" in err
    assert not (tmp_path / "e").exists()


def test_evaluate_refuses_other_class_names(trained, tmp_path, capsys):
    model, _ = trained
    renamed = write_blocky_dataset(tmp_path / "prepared", n_train=1, n_test=1, key="toy")
    meta = json.loads((renamed / "meta.json").read_text())
    (renamed / "meta.json").write_text(json.dumps({**meta, "classes": ["road", "car", "sky"]}))
    argv = ["evaluate", "--model", str(model), "--data", str(renamed), "--out", str(tmp_path / "e")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(model) in err and str(renamed / "meta.json") in err and "'road'" in err


def test_detect_refuses_a_model_trained_on_another_dataset(trained, tmp_path):
    from mopeft.evaluation.detect import run_detection

    model, _ = trained
    other = write_blocky_dataset(tmp_path / "prepared", n_train=1, n_test=1, key="other")
    with pytest.raises(ValueError, match=r"trained on dataset 'toy'.*other/meta\.json is 'other'"):
        run_detection(model, other, tmp_path / "d.json")
    assert not (tmp_path / "d.json").exists()


def _cell(root: Path, dataset: str, method: str, seed: int = 0, folder_method: str | None = None) -> Path:
    path = root / "cells" / dataset / (folder_method or method) / "default" / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"dataset": dataset, "method": method, "variant": "default", "seed": seed, "miou": 50.0}
    path.write_text(json.dumps({**body, "method_options": {}}))
    return path


def test_table_refuses_the_same_cell_twice(tmp_path):
    a = _cell(tmp_path, "kvasir_instrument", "lora")
    b = _cell(tmp_path, "deepcrack", "lora")
    with pytest.raises(ValueError, match=rf"{re.escape(str(a))}: given twice"):
        load_cells([a, b, a])
    with pytest.raises(ValueError, match="given twice"):  # the same file by another name
        load_cells([a, a.parent / ".." / "seed0" / "metrics.json"])


def test_table_refuses_two_files_for_one_cell(tmp_path):
    a = _cell(tmp_path / "run1", "kvasir_instrument", "lora")
    b = _cell(tmp_path / "run2", "kvasir_instrument", "lora")
    with pytest.raises(ValueError, match="two results for the same cell") as exc:
        load_cells([a, b])
    assert str(a) in str(exc.value) and str(b) in str(exc.value)
    assert len(load_cells([a, _cell(tmp_path / "run2", "kvasir_instrument", "lora", seed=1)])) == 2


def test_table_refuses_a_cell_whose_content_disagrees_with_its_folder(tmp_path, capsys):
    moved = _cell(tmp_path, "kvasir_instrument", "lora", folder_method="mopeft")
    with pytest.raises(ValueError, match=r"method 'lora' \(folder: 'mopeft'\)"):
        load_cells([moved])
    config = tmp_path / "config.yaml"
    config.write_text("run: t\n")
    argv = ["table", "4.3", "--cells", str(moved), "--config", str(config), "--out", str(tmp_path / "t")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(moved) in err
