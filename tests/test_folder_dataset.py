"""Folder datasets (config custom_datasets): prepared by the common path into the prepared layout,
with digests and a fixed split; every bad input is one error naming the source file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopeft.cli import main
from mopeft.data.errors import PrepareError
from mopeft.data.folder import prepare_folder
from mopeft.data.folder_spec import FolderSpecError, check_entry, folder_spec, resolve
from mopeft.data.layout import hashed_order, list_pairs
from mopeft.io import read_json, sha256_file

CLASSES = ["ground", "leaf", "stem"]
PALETTE = {"ground": [0, 0, 0], "leaf": [0, 200, 0], "stem": [150, 75, 0], "ignore": [255, 255, 255]}
HW = (20, 24)


def write_folders(root: Path, n: int = 10, colour: bool = False, ignore: int = 9) -> dict:
    """``root/images/*.png`` (RGB) and ``root/masks/*.png`` (ids 0..2 plus ``ignore``, or the
    PALETTE's colours); returns the config entry naming them."""
    rng = np.random.default_rng(0)
    for i in range(n):
        ids = rng.integers(0, 3, size=HW).astype(np.uint8)
        ids[0, :3] = ignore
        image = rng.integers(0, 256, size=(*HW, 3), dtype=np.uint8)
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"im{i:02d}.png")
        if colour:
            table = np.array([PALETTE[c] for c in CLASSES], dtype=np.uint8)
            rgb = table[ids.clip(max=2)]
            rgb[ids == ignore] = PALETTE["ignore"]
            Image.fromarray(rgb).save(root / "masks" / f"im{i:02d}.png")
        else:
            Image.fromarray(ids).save(root / "masks" / f"im{i:02d}.png")
    entry = {"images": str(root / "images"), "masks": str(root / "masks"), "classes": CLASSES}
    return entry | ({"palette": PALETTE} if colour else {"ignore": ignore})


def prepare(entry: dict, out: Path, key: str = "plants") -> Path:
    return prepare_folder(resolve(key, entry, out / "raw"), out / "prepared")


def test_prepares_into_the_layout_with_a_fixed_split_and_digests(tmp_path):
    entry = write_folders(tmp_path / "src") | {"test_fraction": 0.2, "seed": 3}
    ds = prepare(entry, tmp_path)
    meta = read_json(ds / "meta.json")
    assert meta["domain"] == "Custom" and meta["classes"] == CLASSES and meta["train_split"] == "official"
    assert meta["counts"] == {"train": 8, "test": 2} and meta["synthetic"] is False
    stems = [f"im{i:02d}" for i in range(10)]
    assert [p[0].stem for p in list_pairs(ds / "test")] == sorted(hashed_order(stems, 3)[:2])
    src = tmp_path / "src"
    assert meta["sources"]["masks/im04.png"] == sha256_file(src / "masks/im04.png")
    assert len(meta["sources"]) == 20
    # mask value 9 (the entry's ignore) is the prepared layout's 255; class ids stay
    split = "test" if (ds / "test/labels/im04.png").exists() else "train"
    label = np.asarray(Image.open(ds / split / "labels/im04.png"))
    source = np.asarray(Image.open(src / "masks/im04.png"))
    assert (label[source == 9] == 255).all() and (label[source < 3] == source[source < 3]).all()
    spec = folder_spec("plants", entry)
    assert spec.domain == "Custom" and spec.classes == tuple(CLASSES) and spec.train_split == "official"


def test_train_and_test_folders_and_palette_masks(tmp_path):
    train = write_folders(tmp_path / "tr", n=3, colour=True)
    test = write_folders(tmp_path / "te", n=2, colour=True)
    entry = {
        "train": {"images": train["images"], "masks": train["masks"]},
        "test": {"images": test["images"], "masks": test["masks"]},
        "classes": CLASSES,
        "palette": PALETTE,
        "domain": "Agriculture",
    }
    ds = prepare(entry, tmp_path)
    meta = read_json(ds / "meta.json")
    assert meta["counts"] == {"train": 3, "test": 2} and meta["domain"] == "Agriculture"
    assert "train/masks/im00.png" in meta["sources"] and "test/images/im01.png" in meta["sources"]
    label = np.asarray(Image.open(ds / "test/labels/im01.png"))
    assert set(np.unique(label)) <= {0, 1, 2, 255} and (label[0, :3] == 255).all()


def test_cli_prepares_a_resolved_spec_file(tmp_path, capsys):
    entry = write_folders(tmp_path / "src", n=4)
    spec = tmp_path / "plants.folder.json"
    spec.write_text(json.dumps(resolve("plants", entry, tmp_path / "raw")))
    assert main(["prepare", "--spec", str(spec), "--out", str(tmp_path / "prepared")]) == 0
    assert read_json(tmp_path / "prepared/plants/meta.json")["counts"] == {"train": 3, "test": 1}


# ----------------------------------------------------------------------------------- bad input
def _fails(entry: dict, tmp_path: Path) -> str:
    with pytest.raises(PrepareError) as err:
        prepare(entry, tmp_path)
    assert not (tmp_path / "prepared/plants").exists()  # nothing half-prepared is left
    return str(err.value)


def test_an_image_without_a_mask_is_named(tmp_path):
    entry = write_folders(tmp_path / "src", n=4)
    Image.new("RGB", (24, 20)).save(tmp_path / "src/images/lonely.png")
    msg = _fails(entry, tmp_path)
    assert msg.startswith(f"{tmp_path / 'src/images/lonely.png'}: image without a mask"), msg


def test_a_mask_without_an_image_is_named(tmp_path):
    entry = write_folders(tmp_path / "src", n=4)
    Image.new("L", (24, 20)).save(tmp_path / "src/masks/orphan.png")
    msg = _fails(entry, tmp_path)
    assert msg.startswith(f"{tmp_path / 'src/masks/orphan.png'}: mask without an image"), msg


def test_a_mask_value_outside_the_class_list_is_named(tmp_path):
    entry = write_folders(tmp_path / "src", n=4)
    mask = tmp_path / "src/masks/im02.png"
    ids = np.asarray(Image.open(mask)).copy()
    ids[5, 5] = 4  # classes are 0..2, ignore is 9
    Image.fromarray(ids).save(mask)
    msg = _fails(entry, tmp_path)
    assert msg.startswith(f"{mask}: mask values [4] are not classes (0..2: ground, leaf, stem)"), msg


def test_a_mask_of_another_size_is_named(tmp_path):
    entry = write_folders(tmp_path / "src", n=4)
    mask = tmp_path / "src/masks/im01.png"
    Image.fromarray(np.zeros((20, 25), dtype=np.uint8)).save(mask)
    msg = _fails(entry, tmp_path)
    assert msg.startswith(f"{mask}: mask size 25x20 differs from its image"), msg
    assert "im01.png 24x20" in msg


def test_a_colour_not_in_the_palette_is_named(tmp_path):
    entry = write_folders(tmp_path / "src", n=4, colour=True)
    mask = tmp_path / "src/masks/im03.png"
    rgb = np.asarray(Image.open(mask)).copy()
    rgb[2, 2] = (10, 20, 30)
    Image.fromarray(rgb).save(mask)
    msg = _fails(entry, tmp_path)
    assert msg.startswith(f"{mask}: unknown label colour(s) [(10, 20, 30)]"), msg
    assert "not listed in the palette (config custom_datasets.plants.palette" in msg


def test_a_jpeg_mask_is_refused(tmp_path):
    entry = write_folders(tmp_path / "src", n=4)
    Image.new("L", (24, 20)).save(tmp_path / "src/masks/im00.jpg")
    msg = _fails(entry, tmp_path)
    assert msg.startswith(f"{tmp_path / 'src/masks/im00.jpg'}: a JPEG mask"), msg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda e: e.update(ignore=1),
            "config custom_datasets.plants.ignore: 1 is also the id of class 'leaf'",
        ),
        (
            lambda e: e.update(palette={"ground": [0, 0, 0], "leaf": [0, 9, 0]}),
            "config custom_datasets.plants.palette: one colour per class; missing ['stem']",
        ),
        (lambda e: e.update(train={"images": "a", "masks": "b"}), "give exactly one of images + masks"),
        (lambda e: e.pop("masks"), "images and masks go together"),
        (lambda e: e.update(test_fraction=1.0), "test_fraction: between 0 and 1"),
    ],
    ids=["ignore-is-a-class", "palette-misses-a-class", "two-layouts", "images-alone", "fraction"],
)
def test_entry_errors_name_the_config_key(change, message):
    entry = {"images": "x", "masks": "y", "classes": CLASSES}
    change(entry)
    with pytest.raises(FolderSpecError) as err:
        check_entry("plants", entry)
    assert message in str(err.value)


def test_generated_scenes_have_per_shape_labels_and_the_pretraining_images():
    """The demo's folder dataset: labelled_scene adds shape-type labels to scene() without changing
    what scene() returns (the packaged tiny SAM was pretrained on those)."""
    from mopeft.data.synthetic_scenes import SCENE_CLASSES, labelled_scene, scene

    kinds = set()
    for i in range(12):
        image, label = labelled_scene(0, i)
        ref_image, mask = scene(0, i)
        assert np.array_equal(image, ref_image) and np.array_equal(label > 0, mask)
        kinds |= set(np.unique(label).tolist())
    assert kinds == set(range(len(SCENE_CLASSES)))  # background and all three shape types occur


def test_scenes_command_writes_a_folder_dataset(tmp_path, capsys):
    raw = tmp_path / "raw"
    assert main(["scenes", "--count", "5", "--seed", "1", "--out", str(raw / "shapes")]) == 0
    entry = {"source": {"generate": "scenes", "count": 5, "seed": 1}, "classes": ["bg", "e", "r", "t"]}
    ds = prepare_folder(resolve("shapes", entry, raw), tmp_path / "prepared")
    meta = read_json(ds / "meta.json")
    assert meta["synthetic"] is True and meta["counts"] == {"train": 4, "test": 1}
