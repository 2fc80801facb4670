"""``test_images="mess"``: test images encoded exactly as MESS's prepare scripts do, on miniatures.

By default the published test JPEGs are copied byte for byte; MESS re-saves CHASE DB1's and
ATLANTIS's with PIL's defaults (JPEG quality 75) and uses FoodSeg103's raw even when not RGB. A
comparison with MESS's numbers needs the same input pixels, so the option must reproduce exactly
that and the default must stay untouched.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopeft.data.datasets.common import PrepareError, PrepareOptions
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import dataset_module
from mopeft.io import read_json


def _mess_resave(raw: bytes) -> bytes:
    """What ``Image.open(p).convert('RGB').save(q.jpg)`` writes, with the quality spelt out."""
    buf = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert("RGB").save(buf, "JPEG", quality=75)
    return buf.getvalue()


def _prepare(key: str, tmp_path: Path, mode: str) -> Path:
    raw = tmp_path / "raw"
    if not raw.exists():
        dataset_module(key).write_miniature(raw, seed=0)
    out = prepare_dataset(key, raw, tmp_path / mode, PrepareOptions(tile_size=64, test_images=mode))
    assert read_json(out / "meta.json")["test_images"] == mode, "meta.json says how images were encoded"
    return out


def _chase_raw(tmp_path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(tmp_path / "raw" / "CHASEDB1.zip") as zf:
        return {Path(n).stem: zf.read(n) for n in zf.namelist() if n.endswith(".jpg")}


def _atlantis_raw(tmp_path: Path) -> dict[str, bytes]:
    # the stem's last folder wins, in sorted order (the flattening's duplicate rule)
    return {p.stem: p.read_bytes() for p in sorted((tmp_path / "raw").glob("**/images/test/*/*.jpg"))}


@pytest.mark.parametrize(("key", "raw_of"), [("chase_db1", _chase_raw), ("atlantis", _atlantis_raw)])
def test_mess_mode_resaves_test_jpegs_at_quality_75_and_default_copies(
    key: str, raw_of, tmp_path: Path
) -> None:
    copied = _prepare(key, tmp_path, "bytes")
    mess = _prepare(key, tmp_path, "mess")
    raw = raw_of(tmp_path)
    tests = sorted((mess / "test" / "images").iterdir())
    assert tests and [p.name for p in tests] == sorted(p.name for p in (copied / "test" / "images").iterdir())
    for out in tests:
        assert out.suffix == ".jpg", "MESS keeps the source name, so the re-save is a JPEG"
        assert out.read_bytes() == _mess_resave(raw[out.stem]), out.name
        assert (copied / "test" / "images" / out.name).read_bytes() == raw[out.stem], out.name
        assert out.read_bytes() != raw[out.stem], "the miniature JPEGs are not quality-75 PIL files"
    for img in (mess / "train" / "images").iterdir():  # MESS prepares no train split: untouched
        assert img.read_bytes() == (copied / "train" / "images" / img.name).read_bytes()
    for lbl in (mess / "test" / "labels").iterdir():
        assert lbl.read_bytes() == (copied / "test" / "labels" / lbl.name).read_bytes()


def test_foodseg103_mess_mode_keeps_a_grey_test_jpeg_raw(tmp_path: Path) -> None:
    """MESS reads FoodSeg103's img_dir as published; the default re-encodes a non-RGB JPEG as RGB."""
    module = dataset_module("foodseg103")
    raw = tmp_path / "raw"
    module.write_miniature(raw, seed=0)
    archive = raw / module.ARCHIVE
    with zipfile.ZipFile(archive) as zf:
        members = {n: zf.read(n, pwd=module.PASSWORD.encode()) for n in zf.namelist()}
    name = "FoodSeg103/Images/img_dir/test/00000049.jpg"
    buf = io.BytesIO()
    Image.open(io.BytesIO(members[name])).convert("L").save(buf, "JPEG", quality=90)
    members[name] = grey = buf.getvalue()
    module._write_encrypted_zip(archive, members, module.PASSWORD, np.random.default_rng(1))

    mess = _prepare("foodseg103", tmp_path, "mess") / "test" / "images" / "00000049.jpg"
    copied = _prepare("foodseg103", tmp_path, "bytes") / "test" / "images" / "00000049.jpg"
    assert mess.read_bytes() == grey
    assert copied.read_bytes() != grey and Image.open(copied).mode == "RGB"


def test_unknown_test_images_mode_is_a_user_error() -> None:
    with pytest.raises(PrepareError, match="test_images must be one of"):
        PrepareOptions(test_images="jpeg")


def test_prepare_cli_passes_test_images(tmp_path: Path) -> None:
    from mopeft.cli import main

    dataset_module("chase_db1").write_miniature(tmp_path / "raw", seed=0)
    args = ["prepare", "--dataset", "chase_db1", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "p")]
    assert main([*args, "--test-images", "mess"]) == 0
    assert read_json(tmp_path / "p" / "chase_db1" / "meta.json")["test_images"] == "mess"
