"""Group-1 preparers (General domain + CWFID) on their generated miniatures.

Each miniature is written in the original raw layout, prepared with the real preparer, and checked
for layout, exact split sizes, label value sets, class counts and one planted raw value whose
prepared class id is known.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopeft.data.datasets.common import PrepareOptions
from mopeft.data.prepared.units import load_unit
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import dataset_module
from mopeft.io import read_json

# key: (MESS classes, train count, test count, [(test stem, (y, x), expected id, class name)])
CASES = {
    "bdd100k": (
        19,
        3,
        2,
        [("7d2f7985-e0c1c5a7", (0, 0), 13, "car"), ("7d2f7985-e0c1c5a7", (0, 8), 255, None)],
    ),
    "dark_zurich": (
        20,
        0,
        4,
        [
            ("GOPR0356_frame_000321", (0, 0), 14, "car"),  # Cityscapes 26
            ("GOPR0356_frame_000321", (0, 12), 255, None),  # Cityscapes 4: no MESS class
            ("GOPR0356_frame_000321", (53, 50), 255, None),  # invGray == 255
        ],
    ),
    "mhp_v1": (19, 4, 2, [("3", (0, 0), 11, "face")]),  # max over two persons (11, 2)
    "foodseg103": (104, 3, 2, [("00000048", (0, 0), 58, "bread")]),
    "atlantis": (56, 4, 3, [("1000001", (0, 0), 34, "river"), ("1000001", (0, 16), 255, None)]),
    "dram": (
        12,
        0,
        4,
        [("Realism_monet_1", (0, 0), 6, "dog"), ("Realism_monet_1", (0, 8), 11, "background")],
    ),
    "cwfid": (3, 2, 4, [("003", (0, 0), 1, "crop seedling"), ("003", (0, 6), 2, "weed")]),
}


def _prepare(key: str, tmp_path: Path, **opts) -> Path:
    raw = tmp_path / "raw" / key
    dataset_module(key).write_miniature(raw, seed=0)
    return prepare_dataset(key, raw, tmp_path / "prepared", PrepareOptions(tile_size=64, **opts))


@pytest.mark.parametrize("key", sorted(CASES))
def test_miniature_prepares(key: str, tmp_path: Path) -> None:
    num_classes, n_train, n_test, known = CASES[key]
    module = dataset_module(key)
    out = _prepare(key, tmp_path)
    raw = tmp_path / "raw" / key
    assert (raw / "MINIATURE").exists()
    for src in module.SPEC.sources:  # the miniature uses the original archive / folder names
        assert (raw / src.filename).exists(), src.filename

    meta = read_json(out / "meta.json")
    assert meta["dataset"] == key and meta["synthetic"] is True
    assert meta["num_classes"] == num_classes == len(module.SPEC.classes)
    assert meta["counts"] == {"train": n_train, "test": n_test}
    assert meta["train_split"] == ("none" if n_train == 0 else "official")
    if n_train == 0:
        assert meta["split_protocol"] == "kfold over test"
    for split, n in (("train", n_train), ("test", n_test)):
        images = sorted((out / split / "images").iterdir())
        labels = sorted((out / split / "labels").iterdir())
        assert len(images) == len(labels) == n
        assert [p.stem for p in images] == [p.stem for p in labels]
        for lbl in labels:
            with Image.open(lbl) as im:
                assert im.mode == "L"
                values = set(np.unique(np.asarray(im)).tolist())
            assert values <= set(range(num_classes)) | {255}, (lbl, values)
    for stem, (y, x), expected, name in known:
        label = np.asarray(Image.open(out / "test" / "labels" / f"{stem}.png"))
        assert label[y, x] == expected, (stem, y, x, label[y, x])
        if name is not None:
            assert module.SPEC.classes[expected] == name
    assert not list((tmp_path / "prepared").glob(".*")), "scratch or temp folders left behind"


def test_spec_table_facts() -> None:
    specs = {k: dataset_module(k).SPEC for k in CASES}
    assert specs["bdd100k"].name == "BDD100K" and specs["bdd100k"].num_classes_label == "19 (Medium)"
    assert specs["mhp_v1"].name == "MHPv1" and specs["mhp_v1"].vocabulary == "Task-spec."
    assert specs["cwfid"].domain == "Agriculture and Biology"
    assert any("CEFID" in n for n in specs["cwfid"].notes)
    assert specs["foodseg103"].expected_test == 2125 and not specs["foodseg103"].expected_test_is_exact
    assert {k for k, s in specs.items() if s.train_split == "none"} == {"dark_zurich", "dram"}
    for key, spec in specs.items():
        assert spec.key == key and spec.mess_key and spec.task_description and spec.sources


def test_kfold_units_cover_every_test_image(tmp_path: Path) -> None:
    out = _prepare("dark_zurich", tmp_path)
    folds = [load_unit(out, f"fold{i}", kfold=2) for i in range(2)]
    tested = sorted(p[0].stem for f in folds for p in f.test)
    assert len(tested) == len(set(tested)) == 4
    for f in folds:
        assert not {p[0].stem for p in f.train} & {p[0].stem for p in f.test}


def test_mhp_train_is_the_first_names_of_train_list(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(dataset_module("mhp_v1"), "TRAIN_FIRST", 2)
    out = _prepare("mhp_v1", tmp_path)
    assert sorted(p.stem for p in (out / "train" / "labels").iterdir()) == ["1", "2"]
    assert sorted(p.stem for p in (out / "test" / "images").iterdir()) == ["21", "3"]


def test_cwfid_id_28_only_in_test(tmp_path: Path) -> None:
    out = _prepare("cwfid", tmp_path)
    assert "028" in {p.stem for p in (out / "test" / "images").iterdir()}
    assert "028" not in {p.stem for p in (out / "train" / "images").iterdir()}


def test_atlantis_duplicate_test_names_flattened_like_mess(tmp_path: Path) -> None:
    out = _prepare("atlantis", tmp_path)
    meta = read_json(out / "meta.json")
    assert meta["test_duplicates_dropped"] == 1
    assert {p.name.split("_")[0] for p in (out / "train" / "images").iterdir()} == {"train", "val"}


def test_foodseg_archive_is_password_protected(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    dataset_module("foodseg103").write_miniature(raw)
    with zipfile.ZipFile(raw / "FoodSeg103.zip") as zf:
        name = "FoodSeg103/ImageSets/test.txt"
        with pytest.raises(RuntimeError, match="password"):
            zf.read(name)
        assert zf.read(name, pwd=b"LARCdataset9947") == b"00000048.jpg\n00000049.jpg\n"


def test_miniature_is_deterministic(tmp_path: Path) -> None:
    for seed_dir in ("a", "b"):
        dataset_module("bdd100k").write_miniature(tmp_path / seed_dir, seed=3)
    for name in ("bdd100k_images_10k.zip", "bdd100k_sem_seg_labels_trainval.zip"):
        with zipfile.ZipFile(tmp_path / "a" / name) as a, zipfile.ZipFile(tmp_path / "b" / name) as b:
            assert [a.read(n) for n in a.namelist()] == [b.read(n) for n in b.namelist()]


def test_non_rgb_source_images_become_rgb(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "cwfid"
    dataset_module("cwfid").write_miniature(raw)
    img = raw / "cwfid" / "images" / "001_image.png"
    Image.open(img).convert("RGBA").save(img)
    out = prepare_dataset("cwfid", raw, tmp_path / "prepared", PrepareOptions())
    with (
        Image.open(out / "test" / "images" / "001.png") as im,
        Image.open(out / "test" / "images" / "003.png") as ok,
    ):
        assert im.mode == "RGB" and ok.mode == "RGB"
    assert (out / "test" / "images" / "003.png").read_bytes() == (
        raw / "cwfid" / "images" / "003_image.png"
    ).read_bytes()


def _stems(zip_path: Path, folder: str) -> set[str]:
    with zipfile.ZipFile(zip_path) as zf:
        return {Path(n).stem for n in zf.namelist() if f"/{folder}/" in n}


def test_bdd_train_pairs_by_intersection_and_records_what_it_dropped(tmp_path: Path) -> None:
    out = _prepare("bdd100k", tmp_path)
    raw = tmp_path / "raw" / "bdd100k"
    images = _stems(raw / "bdd100k_images_10k.zip", "10k/train")
    masks = _stems(raw / "bdd100k_sem_seg_labels_trainval.zip", "masks/train")
    assert masks - images and images - masks, "the miniature must carry BDD's unpaired train files"
    assert read_json(out / "meta.json")["train_dropped"] == {
        "masks_without_image": sorted(f"{s}.png" for s in masks - images),
        "images_without_mask": sorted(f"{s}.jpg" for s in images - masks),
    }
    assert sorted(p.stem for p in (out / "train" / "labels").iterdir()) == sorted(images & masks)


def test_bdd_test_split_stays_exact(tmp_path: Path) -> None:
    from mopeft.data.datasets.common import PrepareError
    from mopeft.data.synthetic.miniature import replace_members

    raw = tmp_path / "raw" / "bdd100k"
    dataset_module("bdd100k").write_miniature(raw)
    replace_members(raw / "bdd100k_images_10k.zip", {"bdd100k/images/10k/val/7d2f7986-e0c1c5a7.jpg": None})
    with pytest.raises(PrepareError, match=r"images_10k\.zip: missing image for 7d2f7986-e0c1c5a7\.png"):
        prepare_dataset("bdd100k", raw, tmp_path / "prepared", PrepareOptions())
    assert not (tmp_path / "prepared" / "bdd100k").exists()
