"""FAIR-1M miniature -> prepare: layout, rasterised labels, per-tile XML GT, split protocol."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from mopeft.data.datasets import fair1m
from mopeft.data.datasets.common import PrepareError, PrepareOptions
from mopeft.data.prepared.write import prepare_dataset
from mopeft.detection import SPEC_CLASSES
from mopeft.detection.rotated import iou
from mopeft.detection.xml_io import Obj, read_xml

SMALL_CAR = SPEC_CLASSES.index("Small Car")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    d = tmp_path_factory.mktemp("raw") / "fair1m"
    fair1m.write_miniature(d)
    return d


def test_miniature_is_the_raw_format(raw):
    assert (raw / "MINIATURE").exists()
    with zipfile.ZipFile(raw / "train/part1/images.zip") as zf:
        assert zf.namelist() == ["images/0.tif", "images/1.tif"]
        with zf.open("images/0.tif") as f, Image.open(f) as im:
            assert (im.format, im.mode, im.size) == ("TIFF", "RGB", (150, 130))
    with zipfile.ZipFile(raw / "train/part2/labelXmls.zip") as zf:
        assert len(zf.namelist()) == 5
        text = zf.read("labelXmls/2.xml").decode()
    assert text.count("<point>") == 5 * text.count("<object>") and "<possibleresult>" in text


def test_prepare_whole_images(raw, tmp_path):
    out = prepare_dataset("fair1m", raw, tmp_path)  # tile 1024 > image: one tile per image
    meta = json.loads((out / "meta.json").read_text())
    # 7 images sorted by id, k = 5: index 4 ("4") is test, the other 6 train
    assert meta["counts"] == {"train": 6, "test": 1} and meta["synthetic"] is True
    assert sorted(p.name for p in (out / "test/images").iterdir()) == ["4_0.png"]
    assert meta["num_classes"] == 38 and meta["classes"][0] == "background"
    label = np.asarray(Image.open(out / "train/labels/0_0.png"))
    assert label.shape == (130, 150)
    assert label[50, 40] == SMALL_CAR  # centre (x=40, y=50) of the planted Small Car
    # x from 30 to 50: pixel columns 30..49 have their centres inside
    assert label[50, 29] == 0 and label[50, 30] == label[50, 49] == SMALL_CAR and label[50, 50] == 0
    assert (label == SMALL_CAR).sum() == 20 * 10
    ann = read_xml(out / "train/annotations/0_0.xml")
    assert sorted(o.name for o in ann.objects) == ["Small Car", "Tennis Court"]
    assert (ann.width, ann.height) == (150, 130)
    # every tile has an annotation file, and its object count equals the original XML's
    for split in ("train", "test"):
        stems = {p.stem for p in (out / split / "images").iterdir()}
        assert stems == {p.stem for p in (out / split / "annotations").iterdir()}
    for stem in ("0", "4"):
        split = "test" if stem == "4" else "train"
        assert len(read_xml(out / split / "annotations" / f"{stem}_0.xml").objects) == len(
            fair1m.miniature_objects(int(stem))
        )


def test_prepare_tiled(raw, tmp_path):
    opts = PrepareOptions(tile_size=64, extra={"test_every": 3})
    out = prepare_dataset("fair1m", raw, tmp_path, opts)
    meta = json.loads((out / "meta.json").read_text())
    # 150 x 130 image: test tiles start at 0, 64, 128 on both axes -> 9 per image; test = ids 2, 5
    # train: overlap round(64*200/1024) = 12, stride 52, starts x: 0, 52, 86 / y: 0, 52, 66 -> 9 per image
    assert meta["counts"] == {"train": 5 * 9, "test": 2 * 9} and meta["train_overlap"] == 12
    with Image.open(out / "test/images/2_8.png") as im:
        assert im.size == (150 - 128, 130 - 128)  # edge tiles are cropped, not padded
    # the Small Car (x 30..50, y 45..55) lies wholly inside train tile 0 (0..64) and tile 1 (x 52..116: no)
    ann0 = read_xml(out / "train/annotations/0_0.xml")
    cars = [o for o in ann0.objects if o.name == "Small Car"]
    assert len(cars) == 1
    assert iou(cars[0].poly, [[30, 45], [50, 45], [50, 55], [30, 55]]) == pytest.approx(1.0)
    label = np.asarray(Image.open(out / "train/labels/0_0.png"))
    assert label[50, 40] == SMALL_CAR
    # test objects are counted once over the non-overlapping tiles (none is below the 50 % rule twice)
    total = sum(len(read_xml(p).objects) for p in (out / "test/annotations").glob("*.xml"))
    assert total <= sum(len(fair1m.miniature_objects(i)) for i in (2, 5))


def test_tile_keep_rule_and_overlap_order():
    big = Obj("Bridge", np.array([[0, 0], [40, 0], [40, 40], [0, 40]], float))
    car = Obj("Small Car", np.array([[10, 10], [20, 10], [20, 20], [10, 20]], float))
    cut60 = Obj("Bus", np.array([[24, 0], [34, 0], [34, 10], [24, 10]], float))  # 6 of 10 columns inside x<30
    cut40 = Obj("Van", np.array([[26, 20], [36, 20], [36, 30], [26, 30]], float))  # 4 of 10 inside
    kept, paint = fair1m.tile_objects([big, car, cut60, cut40], 0, 0, 30, 30, keep_fraction=0.5)
    # Bridge: 900/1600 = 56 % inside -> kept; Bus 60 % kept; Van 40 % dropped
    assert sorted(o.name for o in kept) == ["Bridge", "Bus", "Small Car"]
    label = fair1m.rasterise([p for p, _ in paint], [v for _, v in paint], 30, 30)
    assert label[15, 15] == SMALL_CAR  # smaller object painted over the bridge
    assert label[25, 28] == 255  # the 40 % Van is ignore
    assert label[35 - 10, 5] == SPEC_CLASSES.index("Bridge")
    bus = next(o for o in kept if o.name == "Bus")
    assert iou(bus.poly, [[24, 0], [30, 0], [30, 10], [24, 10]]) == pytest.approx(1.0)  # visible part


def test_split_and_windows():
    assert fair1m.split_stems(["10", "2", "1", "0", "3", "11"], 3) == (["0", "1", "3", "10"], ["2", "11"])
    assert fair1m.windows(150, 64, 64) == [0, 64, 128]
    assert fair1m.windows(150, 64, 52) == [0, 52, 86]
    assert fair1m.windows(50, 64, 52) == [0]


def test_validation_split_v2(raw, tmp_path):
    import shutil

    raw2 = tmp_path / "raw2"
    shutil.copytree(raw, raw2)
    (raw2 / "validation").mkdir()
    with zipfile.ZipFile(raw / "train/part1/images.zip") as src, \
            zipfile.ZipFile(raw2 / "validation/images.zip", "w") as zi:
        zi.writestr("images/100.tif", src.read("images/0.tif"))
    with zipfile.ZipFile(raw / "train/part1/labelXml.zip") as src, \
            zipfile.ZipFile(raw2 / "validation/labelXmls.zip", "w") as zx:
        zx.writestr("labelXmls/100.xml", src.read("labelXml/0.xml"))
    out = prepare_dataset("fair1m", raw2, tmp_path / "prep")
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 7, "test": 1} and meta["split_protocol"].startswith("v2.0")
    assert (out / "test/annotations/100_0.xml").exists()


def test_bad_xml_names_the_archive(raw, tmp_path):
    import shutil

    raw2 = tmp_path / "raw2"
    shutil.copytree(raw, raw2)
    xml_zip = raw2 / "train/part1/labelXml.zip"
    with zipfile.ZipFile(raw / "train/part1/labelXml.zip") as src, zipfile.ZipFile(xml_zip, "w") as dst:
        dst.writestr("labelXml/0.xml", src.read("labelXml/0.xml").decode().replace("Small Car", "Hovercraft"))
        dst.writestr("labelXml/1.xml", src.read("labelXml/1.xml"))
    with pytest.raises(PrepareError, match=r"labelXml\.zip:labelXml/0\.xml.*Hovercraft"):
        prepare_dataset("fair1m", raw2, tmp_path / "prep")
    (raw2 / "train/part2/images.zip").unlink()
    with pytest.raises(PrepareError, match=r"train/part2/images\.zip: missing"):
        prepare_dataset("fair1m", raw2, tmp_path / "prep")
