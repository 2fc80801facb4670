"""`mopeft predict`: class-id PNGs at each image's original size that `mopeft score` reads, giving
the evaluated cell's mIoU back exactly; overlays beside them; bad folders named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import combine_args, write_blocky_dataset
from PIL import Image

from mopeft.cli import main
from mopeft.model.weights import TINY_ASSET, TINY_SHA256

TRAIN = [
    "--arch", "tiny", "--image-size", "32", "--batch-size", "2", "--lr", "1e-3", "--steps", "6",
    "--checkpoint", str(TINY_ASSET), "--checkpoint-sha256", TINY_SHA256,
]  # fmt: skip


@pytest.fixture(scope="module")
def cell(tmp_path_factory):
    """A trained, evaluated and combined LoRA cell on a 3-class dataset of non-square 40x56 images
    (resized to 32 px, so predictions must be mapped back to the original size)."""
    root = tmp_path_factory.mktemp("predict")
    ds = write_blocky_dataset(root / "prepared", n_train=4, n_test=5, size=(40, 56))
    unit = root / "cell/units/main"
    assert main(["train", "--data", str(ds), "--method", "lora", *TRAIN, "--out", str(unit)]) == 0
    model = str(unit / "model.safetensors")
    assert main(["evaluate", "--model", model, "--data", str(ds), "--out", str(unit / "eval")]) == 0
    cell_metrics = root / "cell/metrics.json"
    assert main(combine_args([unit / "eval"], ds / "meta.json", cell_metrics)) == 0
    return ds, unit, json.loads(cell_metrics.read_text())


def test_predict_then_score_reproduces_the_cells_miou(cell, tmp_path, capsys):
    ds, unit, metrics = cell
    pred = tmp_path / "pred"
    args = ["predict", "--model", str(unit / "model.safetensors"), "--images", str(ds / "test/images")]
    assert main([*args, "--out", str(pred), "--overlay"]) == 0
    for image in sorted((ds / "test/images").iterdir()):
        with Image.open(pred / f"{image.stem}.png") as p, Image.open(image) as i:
            assert p.mode == "L" and p.size == i.size == (56, 40)
        with Image.open(pred / "overlay" / f"{image.stem}.png") as o:
            assert o.mode == "RGB" and o.size == (56, 40)
    said = capsys.readouterr().out  # what was written and where, not "pred: 5 predictions"
    assert f"wrote 5 class-id PNGs to {pred} (class names: {pred / 'predict.json'})" in said
    assert f"and 5 colour overlays to {pred / 'overlay'}" in said
    out = tmp_path / "score.json"
    score = ["score", "--pred", str(pred), "--gt", str(ds / "test/labels"), "--num-classes", "3"]
    assert main([*score, "--out", str(out)]) == 0
    scored = json.loads(out.read_text())
    assert scored["num_images"] == metrics["num_images"] == 5
    assert abs(scored["miou"] - metrics["miou"]) <= 1e-9, (scored["miou"], metrics["miou"])
    summary = json.loads((pred / "predict.json").read_text())
    assert summary["images"] == 5 and summary["classes"] == ["c0", "c1", "c2"]


def test_evaluate_writes_the_predictions_of_its_example_images(cell, tmp_path):
    """Fig. 4.1's inputs: `--examples N` saves the first N test stems in hashed order, and they are
    exactly what `mopeft predict` writes for those images."""
    from mopeft.data.prepared.layout import hashed_order

    ds, unit, _ = cell
    eval_dir = tmp_path / "eval"
    model = str(unit / "model.safetensors")
    assert (
        main(["evaluate", "--model", model, "--data", str(ds), "--examples", "2", "--out", str(eval_dir)])
        == 0
    )
    stems = sorted(p.stem for p in (ds / "test/images").iterdir())
    assert sorted(p.stem for p in (eval_dir / "examples").iterdir()) == sorted(hashed_order(stems, 0)[:2])
    pred = tmp_path / "pred"
    assert main(["predict", "--model", model, "--images", str(ds / "test/images"), "--out", str(pred)]) == 0
    for example in (eval_dir / "examples").iterdir():
        assert np.array_equal(np.asarray(Image.open(example)), np.asarray(Image.open(pred / example.name)))


def test_predict_names_a_bad_images_folder(cell, tmp_path, capsys):
    _, unit, _ = cell
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    args = ["predict", "--model", str(unit / "model.safetensors"), "--out", str(tmp_path / "out")]
    assert main([*args, "--images", str(empty)]) == 2
    assert f"{empty}: no image files" in capsys.readouterr().err
    assert main([*args, "--images", str(tmp_path / "missing")]) == 2
    assert f"{tmp_path / 'missing'}: image folder not found" in capsys.readouterr().err
