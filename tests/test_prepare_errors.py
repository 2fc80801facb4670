"""Corrupt raw input -> one clear error naming the file, and nothing that looks prepared.

A prepared dataset is trusted by the pipeline when ``<out>/<key>/meta.json`` exists, so a failed
preparation must leave no ``<out>/<key>`` (or leave the previous complete one untouched) and no
scratch/temp folders behind.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mopeft.cli import main
from mopeft.data.datasets.common import PrepareError, PrepareOptions
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import dataset_module
from mopeft.data.synthetic.miniature import encode, replace_members


def _miniature(key: str, tmp_path: Path) -> Path:
    raw = tmp_path / "raw" / key
    dataset_module(key).write_miniature(raw, seed=0)
    return raw


def _assert_fails_cleanly(key: str, raw: Path, out: Path, match: str) -> None:
    with pytest.raises(PrepareError, match=match) as err:
        prepare_dataset(key, raw, out, PrepareOptions(tile_size=64))
    assert "\n" not in str(err.value)
    assert not (out / key / "meta.json").exists()
    assert not (out / key).exists()
    if out.exists():
        assert not list(out.glob(".*")), "temp or scratch folder left behind"


def test_truncated_image(tmp_path: Path) -> None:
    raw = _miniature("cwfid", tmp_path)
    img = raw / "cwfid" / "images" / "003_image.png"
    img.write_bytes(img.read_bytes()[:200])
    _assert_fails_cleanly("cwfid", raw, tmp_path / "out", r"003_image\.png: cannot decode image")


def test_truncated_image_inside_archive(tmp_path: Path) -> None:
    raw = _miniature("bdd100k", tmp_path)
    member = "bdd100k/images/10k/val/7d2f7985-e0c1c5a7.jpg"
    with zipfile.ZipFile(raw / "bdd100k_images_10k.zip") as zf:
        data = zf.read(member)
    replace_members(raw / "bdd100k_images_10k.zip", {member: data[: len(data) // 2]})
    _assert_fails_cleanly("bdd100k", raw, tmp_path / "out", r"7d2f7985-e0c1c5a7\.jpg: cannot decode")


def test_unknown_label_colour(tmp_path: Path) -> None:
    raw = _miniature("cwfid", tmp_path)
    ann_path = raw / "cwfid" / "annotations" / "010_annotation.png"
    ann = np.asarray(Image.open(ann_path)).copy()
    ann[5, 5] = (1, 2, 3)
    ann_path.write_bytes(encode(ann, "PNG"))
    _assert_fails_cleanly(
        "cwfid", raw, tmp_path / "out", r"010_annotation\.png: unknown label colour.*\(1, 2, 3\)"
    )


def test_missing_archive(tmp_path: Path) -> None:
    raw = _miniature("bdd100k", tmp_path)
    (raw / "bdd100k_sem_seg_labels_trainval.zip").unlink()
    _assert_fails_cleanly(
        "bdd100k",
        raw,
        tmp_path / "out",
        r"bdd100k_sem_seg_labels_trainval\.zip: missing\..*bdd-data\.berkeley",
    )


def test_missing_automatic_archive_points_to_download(tmp_path: Path) -> None:
    raw = tmp_path / "raw" / "dark_zurich"
    raw.mkdir(parents=True)
    _assert_fails_cleanly(
        "dark_zurich", raw, tmp_path / "out", r"Dark_Zurich_val_anon\.zip: missing.*download"
    )


def test_wrong_checksum(tmp_path: Path) -> None:
    raw = _miniature("bdd100k", tmp_path)
    (raw / "MINIATURE").unlink()  # now it claims to be the real download: md5s are checked
    _assert_fails_cleanly(
        "bdd100k", raw, tmp_path / "out", r"bdd100k_images_10k\.zip: md5 \w+ does not match"
    )


def test_label_value_out_of_range(tmp_path: Path) -> None:
    raw = _miniature("bdd100k", tmp_path)
    member = "bdd100k/labels/sem_seg/masks/val/7d2f7986-e0c1c5a7.png"
    with zipfile.ZipFile(raw / "bdd100k_sem_seg_labels_trainval.zip") as zf:
        mask = np.asarray(Image.open(io.BytesIO(zf.read(member)))).copy()
    mask[3, 3] = 40
    replace_members(raw / "bdd100k_sem_seg_labels_trainval.zip", {member: encode(mask, "PNG")})
    _assert_fails_cleanly("bdd100k", raw, tmp_path / "out", r"7d2f7986-e0c1c5a7\.png: label values \[40\]")


def test_not_an_archive(tmp_path: Path) -> None:
    raw = _miniature("dram", tmp_path)
    (raw / "DRAM_processed.zip").write_bytes(b"<html>403 Forbidden</html>")
    _assert_fails_cleanly("dram", raw, tmp_path / "out", r"DRAM_processed\.zip: not a zip, tar or RAR")


def test_failed_rerun_leaves_previous_complete_folder_untouched(tmp_path: Path) -> None:
    raw = _miniature("cwfid", tmp_path)
    out = tmp_path / "out"
    prepare_dataset("cwfid", raw, out, PrepareOptions(tile_size=64))
    before = {p.relative_to(out): p.read_bytes() for p in (out / "cwfid").rglob("*") if p.is_file()}
    img = raw / "cwfid" / "images" / "001_image.png"
    img.write_bytes(img.read_bytes()[:100])
    with pytest.raises(PrepareError, match=r"001_image\.png"):
        prepare_dataset("cwfid", raw, out, PrepareOptions(tile_size=64))
    after = {p.relative_to(out): p.read_bytes() for p in (out / "cwfid").rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in out.iterdir()] == ["cwfid"]


def test_cli_reports_one_clean_line(tmp_path: Path, capsys) -> None:
    raw = _miniature("cwfid", tmp_path)
    img = raw / "cwfid" / "images" / "003_image.png"
    img.write_bytes(img.read_bytes()[:200])
    rc = main(["prepare", "--dataset", "cwfid", "--raw", str(raw), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("mopeft prepare: error: ") and "003_image.png" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out" / "cwfid").exists()
