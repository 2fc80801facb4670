"""Class coverage at prepare time: meta.json counts the pixels of every class per split, and a class
without a pixel in a split is refused, naming the dataset, the class and the likely cause.

The motivating report: binary masks saved as 0/255 with the default ``ignore: 255`` prepared
without complaint, every foreground pixel became "ignore", and the cell reported mIoU 100 with the
foreground IoU None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopeft.cli import main
from mopeft.data.datasets.common import PrepareOptions, ensure_layout, save_image, save_label
from mopeft.data.errors import PrepareError
from mopeft.data.folder.prepare import prepare_folder
from mopeft.data.folder.spec import resolve
from mopeft.data.prepared.layout import list_pairs
from mopeft.data.prepared.write import write_prepared
from mopeft.data.spec import DatasetSpec
from mopeft.io import read_json

HW = (24, 32)


def binary_folders(root: Path, n: int = 10, seed: int = 0) -> dict:
    """``n`` image/mask pairs whose masks are 0 (background) / 255 (a bright square), the common
    binary-mask encoding; the image is bright where the mask is."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros(HW, dtype=np.uint8)
        y, x = rng.integers(0, 12, size=2)
        mask[y : y + 10, x : x + 14] = 255
        image = np.where(mask[..., None] > 0, 220, 30) + rng.integers(-20, 21, size=(*HW, 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / "images" / f"b{i:02d}.png")
        Image.fromarray(mask).save(root / "masks" / f"b{i:02d}.png")
    return {"images": str(root / "images"), "masks": str(root / "masks"), "classes": ["background", "bright"]}


def prepare(entry: dict, tmp: Path, key: str = "bin") -> Path:
    return prepare_folder(resolve(key, entry, tmp / "raw"), tmp / "prepared")


def refused(entry: dict, tmp: Path, key: str = "bin") -> str:
    with pytest.raises(PrepareError) as err:
        prepare(entry, tmp, key)
    assert not (tmp / "prepared" / key).exists()  # nothing half-prepared
    return str(err.value)


def label_pixels(ds: Path, split: str, num_classes: int) -> dict:
    """An independent count: np.unique over the prepared labels of ``split``."""
    per_class, ignore = [0] * num_classes, 0
    for _, label_path in list_pairs(ds / split):
        values, counts = np.unique(np.asarray(Image.open(label_path)), return_counts=True)
        for v, c in zip(values.tolist(), counts.tolist(), strict=True):
            if v == 255:
                ignore += c
            else:
                per_class[v] += c
    return {"per_class": per_class, "ignore": ignore}


# ----------------------------------------------------------------------------- the 0/255 report
def test_binary_0_255_masks_with_the_default_ignore_are_refused_with_the_fix(tmp_path):
    entry = binary_folders(tmp_path / "src")
    msg = refused(entry, tmp_path)
    assert msg.startswith("dataset bin: class 'bright' has no pixel in the train or test splits"), msg
    assert "the masks hold only the values {0, 255}, none the value 1, and 255 is `ignore`" in msg
    assert "map 255 to class 1 with `values: {background: 0, bright: 255}`" in msg
    assert "\n" not in msg


def test_the_suggested_values_map_prepares_with_foreground_counted(tmp_path):
    entry = binary_folders(tmp_path / "src") | {"values": {"background": 0, "bright": 255}}
    ds = prepare(entry, tmp_path)
    meta = read_json(ds / "meta.json")
    assert meta["missing_classes"] == {}
    for split in ("train", "test"):
        assert meta["pixels"][split] == label_pixels(ds, split, 2)
        assert meta["pixels"][split]["per_class"][1] > 0 and meta["pixels"][split]["ignore"] == 0
    # every source 255 pixel is class 1: the totals equal the source masks' 255 counts
    source = sum(int((np.asarray(Image.open(p)) == 255).sum()) for p in (tmp_path / "src/masks").iterdir())
    assert meta["pixels"]["train"]["per_class"][1] + meta["pixels"]["test"]["per_class"][1] == source


def test_values_can_name_an_ignore_value_and_refuse_unlisted_ones(tmp_path):
    entry = binary_folders(tmp_path / "src", n=4)
    mask = tmp_path / "src/masks/b01.png"
    ids = np.asarray(Image.open(mask)).copy()
    ids[0, :5] = 128  # unlabelled
    Image.fromarray(ids).save(mask)
    with_ignore = entry | {"values": {"background": 0, "bright": 255, "ignore": 128}}
    ds = prepare(with_ignore, tmp_path)
    meta = read_json(ds / "meta.json")
    assert sum(meta["pixels"][s]["ignore"] for s in ("train", "test")) == 5
    without = entry | {"values": {"background": 0, "bright": 255}}
    msg = refused(without, tmp_path / "second")
    assert msg.startswith(f"{mask}: mask values [128] are not in config custom_datasets.bin.values"), msg


# ------------------------------------------------------------------------------ other causes
def three_class_folders(root: Path, n: int, classes_of: Callable, ignore_marks: bool = True) -> dict:
    """Masks with ids 0..2 (plus 9 = ignore where ``ignore_marks``); ``classes_of(i)`` lists the
    ids drawn in mask i."""
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        mask = np.zeros(HW, dtype=np.uint8)
        for j, c in enumerate(classes_of(i)):
            mask[j * 6 : j * 6 + 5, :] = c
        if ignore_marks:
            mask[-1, :4] = 9
        Image.fromarray(np.full((*HW, 3), 40 * i % 256, dtype=np.uint8)).save(
            root / "images" / f"m{i:02d}.png"
        )
        Image.fromarray(mask).save(root / "masks" / f"m{i:02d}.png")
    return {
        "images": str(root / "images"),
        "masks": str(root / "masks"),
        "classes": ["ground", "leaf", "stem"],
        "ignore": 9,
    }


def test_meta_counts_equal_an_independent_count_including_ignore(tmp_path):
    entry = three_class_folders(tmp_path / "src", 10, lambda i: [1, 2])
    ds = prepare(entry, tmp_path, "plants")
    meta = read_json(ds / "meta.json")
    for split in ("train", "test"):
        assert meta["pixels"][split] == label_pixels(ds, split, 3)
    assert meta["pixels"]["test"]["ignore"] == 4 * meta["counts"]["test"]


def test_a_class_only_in_train_names_the_test_split_and_the_split_fix(tmp_path):
    # only mask m03 has "stem"; with seed 0 and test_fraction 0.2 it lands in train
    entry = three_class_folders(tmp_path / "src", 10, lambda i: [1, 2] if i == 3 else [1])
    ds_probe = tmp_path / "probe"
    allowed = entry | {"allow_missing_classes": ["stem"]}
    ds = prepare(allowed, ds_probe, "plants")
    assert (ds / "train/labels/m03.png").exists(), "the test premise: m03 is a train image"
    assert read_json(ds / "meta.json")["missing_classes"] == {"test": ["stem"]}
    msg = refused(entry, tmp_path, "plants")
    assert msg.startswith("dataset plants: class 'stem' has no pixel in the test split"), msg
    assert "it is labelled in 1 of 8 train masks and 0 of 2 test masks" in msg
    assert "change config custom_datasets.plants.seed or test_fraction" in msg
    assert "list it in config custom_datasets.plants.allow_missing_classes" in msg


def test_a_class_no_mask_holds_names_its_value(tmp_path):
    entry = three_class_folders(tmp_path / "src", 6, lambda i: [1])
    msg = refused(entry, tmp_path, "plants")
    assert msg.startswith("dataset plants: class 'stem' has no pixel in the train or test splits"), msg
    assert "the masks hold only the values {0, 1, 9}, none the value 2, and 9 is `ignore`" in msg
    assert "if 9 really is unlabelled, no mask labels 'stem'" in msg


def test_a_class_value_no_mask_holds_is_named(tmp_path):
    entry = three_class_folders(tmp_path / "src", 6, lambda i: [1], ignore_marks=False)
    msg = refused(entry, tmp_path, "plants")
    assert msg.startswith("dataset plants: class 'stem' has no pixel in the train or test splits"), msg
    assert "no mask holds the value 2 (the masks hold {0, 1}): mask value i is class i" in msg


def test_a_palette_colour_no_mask_holds_is_named(tmp_path):
    root = tmp_path / "src"
    palette = {"sky": [0, 0, 255], "sea": [0, 128, 0], "ship": [200, 0, 0]}
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(5):
        rgb = np.zeros((*HW, 3), dtype=np.uint8)
        rgb[:12] = palette["sky"]
        rgb[12:] = palette["sea"]
        Image.fromarray(rgb).save(root / "masks" / f"p{i}.png")
        Image.fromarray(rgb).save(root / "images" / f"p{i}.png")
    entry = {"images": str(root / "images"), "masks": str(root / "masks"), "classes": list(palette)}
    msg = refused(entry | {"palette": palette}, tmp_path, "sea")
    assert (
        "class 'ship' has no pixel in the train or test splits: no mask holds its palette colour [200, 0, 0]"
        in msg
    )


# ------------------------------------------------------------------------- registered datasets
SPEC = DatasetSpec(
    key="toy", name="Toy", domain="Test", classes=("a", "b", "c"), sources=(), expected_test=None
)


def fill_with(labels: dict[str, list[np.ndarray]]):
    """A preparer's fill(): the given labels per split, with a grey image each."""

    def fill(tmp: Path) -> dict:
        ensure_layout(tmp)
        for split, items in labels.items():
            for i, label in enumerate(items):
                save_image(tmp / split / "images" / f"{i}.png", np.zeros((*label.shape, 3), dtype=np.uint8))
                save_label(tmp / split / "labels" / f"{i}.png", label, 3)
        return {}

    return fill


def _labels(*values: int) -> list[np.ndarray]:
    return [np.full((4, 4), v, dtype=np.uint8) for v in values]


def test_a_registered_dataset_missing_a_class_is_a_warning_naming_the_preparer(tmp_path, caplog):
    """A published release cannot be changed: its absent class is logged and recorded, not refused."""
    fill = fill_with({"train": _labels(0, 1, 2), "test": _labels(0, 1)})
    with caplog.at_level("WARNING", logger="mopeft.data.prepared.coverage"):
        meta = read_json(write_prepared(SPEC, tmp_path, fill, {}, PrepareOptions()) / "meta.json")
    (msg,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert msg.startswith("dataset toy (Toy): class 'c' has no pixel in the test split"), msg
    assert "mopeft/data/datasets/toy.py" in msg and "allow_missing_classes" in msg
    assert meta["missing_classes"] == {"test": ["c"]}
    assert meta["pixels"]["test"] == {"per_class": [16, 16, 0], "ignore": 0}


def test_a_spec_can_declare_an_expected_absence_and_a_miniature_only_records_it(tmp_path, caplog):
    fill = fill_with({"train": _labels(0, 1), "test": _labels(0, 1)})
    declared = DatasetSpec(**{**SPEC.__dict__, "allow_missing_classes": ("c",)})
    with caplog.at_level("WARNING", logger="mopeft.data.prepared.coverage"):
        meta = read_json(write_prepared(declared, tmp_path / "a", fill, {}, PrepareOptions()) / "meta.json")
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert meta["missing_classes"] == {"train": ["c"], "test": ["c"]}
    mini = PrepareOptions(miniature=True)
    meta = read_json(write_prepared(SPEC, tmp_path / "b", fill, {}, mini) / "meta.json")
    assert meta["missing_classes"] == {"train": ["c"], "test": ["c"]}
    with pytest.raises(ValueError, match=r"toy: allow_missing_classes \['d'\] are not classes"):
        DatasetSpec(**{**SPEC.__dict__, "allow_missing_classes": ("d",)})


def test_an_empty_train_split_is_not_judged(tmp_path):
    """K-fold datasets have no labelled train split: only the test split must hold every class."""
    kfold = DatasetSpec(**{**SPEC.__dict__, "train_split": "none"})
    meta = read_json(
        write_prepared(kfold, tmp_path, fill_with({"test": _labels(0, 1, 2)}), {}, PrepareOptions())
        / "meta.json"
    )
    assert meta["counts"] == {"train": 0, "test": 3} and meta["missing_classes"] == {}


# ------------------------------------------------------------------- trained and evaluated
def test_fixed_binary_masks_give_the_foreground_a_numeric_iou(tmp_path):
    """End to end on the tiny model: with the values map, the evaluated foreground has an IoU (with
    the 0/255 masks taken as ignore it had none, and mIoU was the background's alone)."""
    entry = binary_folders(tmp_path / "src", n=6) | {"values": {"background": 0, "bright": 255}}
    ds = prepare(entry, tmp_path)
    out = tmp_path / "cell"
    args = ["--arch", "tiny", "--image-size", "32", "--batch-size", "2", "--lr", "1e-2"]
    assert (
        main(["train", "--data", str(ds), "--method", "decoder_ft", "--steps", "2", *args, "--out", str(out)])
        == 0
    )
    model = str(out / "model.safetensors")
    assert main(["evaluate", "--model", model, "--data", str(ds), "--out", str(out / "eval")]) == 0
    metrics = json.loads((out / "eval/metrics.json").read_text())
    assert isinstance(metrics["per_class_iou"]["bright"], float)
    assert isinstance(metrics["per_class_iou"]["background"], float)
