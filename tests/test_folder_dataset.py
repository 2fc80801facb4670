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
from mopeft.data.folder.prepare import prepare_folder
from mopeft.data.folder.spec import FolderSpecError, check_entry, folder_spec, resolve
from mopeft.data.prepared.layout import hashed_order, list_pairs
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
    from mopeft.data.synthetic.scenes import SCENE_CLASSES, labelled_scene, scene

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
    # one test scene cannot show every shape: those it lacks are allowed, and recorded
    entry = {
        "source": {"generate": "scenes", "count": 5, "seed": 1},
        "classes": ["bg", "e", "r", "t"],
        "allow_missing_classes": ["e", "r", "t"],
    }
    ds = prepare_folder(resolve("shapes", entry, raw), tmp_path / "prepared")
    meta = read_json(ds / "meta.json")
    assert meta["synthetic"] is True and meta["counts"] == {"train": 4, "test": 1}
    (label,) = (ds / "test/labels").iterdir()
    absent = [c for i, c in enumerate(entry["classes"]) if not (np.asarray(Image.open(label)) == i).any()]
    assert absent and meta["missing_classes"] == {"test": absent}


# ------------------------------------------------------------------------ every problem at once
def test_every_problem_of_the_folders_is_reported_in_one_error(tmp_path):
    entry = write_folders(tmp_path / "src", n=6)
    lonely = tmp_path / "src/images/lonely.png"
    Image.new("RGB", (24, 20)).save(lonely)
    bad_value = tmp_path / "src/masks/im02.png"
    ids = np.asarray(Image.open(bad_value)).copy()
    ids[5, 5] = 4
    Image.fromarray(ids).save(bad_value)
    wrong_size = tmp_path / "src/masks/im04.png"
    Image.fromarray(np.zeros((20, 25), dtype=np.uint8)).save(wrong_size)
    msg = _fails(entry, tmp_path)
    assert msg.startswith("config custom_datasets.plants: 3 problems: (1) "), msg
    assert f"{lonely}: image without a mask (no {tmp_path / 'src/masks'}/lonely.png)" in msg
    assert f"{bad_value}: mask values [4] are not classes (0..2: ground, leaf, stem)" in msg
    assert f"{wrong_size}: mask size 25x20 differs from its image" in msg
    assert "\n" not in msg


def test_many_problems_are_listed_up_to_a_limit(tmp_path):
    entry = write_folders(tmp_path / "src", n=4)
    for i in range(25):
        Image.new("L", (24, 20)).save(tmp_path / f"src/masks/orphan{i:02d}.png")
    msg = _fails(entry, tmp_path)
    assert msg.startswith("config custom_datasets.plants: 25 problems: "), msg
    assert msg.count("mask without an image") == 20 and msg.endswith("; ... and 5 more")
    assert "(20) " in msg and "(21) " not in msg


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "Plants\n| injected | row |"),
        ("name", "tab\there"),
        ("domain", "Lab\r"),
        ("classes", ["a", "b\x00"]),
    ],
    ids=["newline", "tab", "carriage-return", "class-nul"],
)
def test_display_names_with_control_characters_are_refused(field, value):
    entry = {"images": "x", "masks": "y", "classes": CLASSES, field: value}
    with pytest.raises(FolderSpecError) as err:
        check_entry("plants", entry)
    where = "classes[1]" if field == "classes" else field
    assert str(err.value).startswith(f"config custom_datasets.plants.{where}: "), err.value
    assert "control character" in str(err.value) and "one line of plain text" in str(err.value)


def test_a_unicode_display_name_is_fine():
    check_entry("plants", {"images": "x", "masks": "y", "classes": CLASSES, "name": "Pflanzen – Blätter"})


@pytest.mark.parametrize(
    ("values", "extra", "message"),
    [
        ({"ground": 0, "leaf": 1}, {}, "values: one mask value per class; missing ['stem']"),
        ({"ground": 0, "leaf": 1, "stem": 1}, {}, "values: two names share a mask value"),
        ({"ground": 0, "leaf": 1, "stem": 300}, {}, "values: mask values are integers 0..255"),
        (
            {"ground": 0, "leaf": 1, "stem": 2},
            {"ignore": 9},
            "ignore: with values, give the unlabelled mask value as values.ignore",
        ),
        (
            {"ground": 0, "leaf": 1, "stem": 2},
            {"palette": PALETTE},
            "values: give palette (colour masks) or values, not both",
        ),
    ],
    ids=["missing-class", "shared", "range", "with-ignore", "with-palette"],
)
def test_values_entry_errors_name_the_key(values, extra, message):
    entry = {"images": "x", "masks": "y", "classes": CLASSES, "values": values, **extra}
    with pytest.raises(FolderSpecError) as err:
        check_entry("plants", entry)
    assert f"config custom_datasets.plants.{message}" in str(err.value)


def test_allow_missing_classes_must_name_classes():
    entry = {"images": "x", "masks": "y", "classes": CLASSES, "allow_missing_classes": ["stem", "root"]}
    with pytest.raises(FolderSpecError, match=r"allow_missing_classes: \['root'\] are not in classes"):
        check_entry("plants", entry)
