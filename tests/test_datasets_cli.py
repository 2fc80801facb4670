"""The dataset commands of the ``mopeft`` CLI: registry listing, miniature, prepare, download."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from mopeft.cli import main
from mopeft.data.registry import DATASETS
from mopeft.io import read_json

ALL_KEYS = {
    "bdd100k", "dark_zurich", "mhp_v1", "foodseg103", "atlantis", "dram", "isaid", "isprs_potsdam",
    "worldfloods", "floodnet", "uavid", "kvasir_instrument", "chase_db1", "cryonuseg", "paxray4",
    "corrosion_cs", "deepcrack", "pst900", "zerowaste_f", "suim", "cub_200", "cwfid", "fair1m",
}  # fmt: skip


def _importable(key: str) -> bool:
    try:
        importlib.import_module(DATASETS[key])
    except ModuleNotFoundError:
        return False
    return True


def test_registry_has_all_23_keys() -> None:
    assert set(DATASETS) == ALL_KEYS


@pytest.mark.parametrize("key", sorted(ALL_KEYS))
def test_datasets_json_lists_each_key(key: str, capsys) -> None:
    if not _importable(key):
        pytest.skip(f"{DATASETS[key]} not written yet")
    assert main(["datasets", "--json", "--dataset", key]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["key"] == key
    assert row["num_classes"] == len(row["classes"]) > 0
    assert row["sources"] and all({"kind", "filename", "url", "checksum"} <= set(s) for s in row["sources"])
    assert set(row["table"]) >= {
        "sensor",
        "segment_size",
        "num_classes_label",
        "class_similarity",
        "vocabulary",
    }
    assert row["train_split"] in ("official", "none") and row["channels"]


def test_datasets_json_all(capsys) -> None:
    missing = [k for k in sorted(ALL_KEYS) if not _importable(k)]
    if missing:
        pytest.skip(f"dataset modules not written yet: {missing}")
    assert main(["datasets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["key"] for r in rows] == list(DATASETS)
    assert main(["datasets"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == len(DATASETS)


def test_datasets_json_known_facts(capsys) -> None:
    assert main(["datasets", "--json", "--dataset", "bdd100k", "--dataset", "dram"]) == 0
    bdd, dram = json.loads(capsys.readouterr().out)
    assert bdd["expected_test"] == 1000 and bdd["sources"][0]["kind"] == "manual"
    assert bdd["sources"][0]["checksum"] == {"md5": "08f26aecceda982568063d3d5873378e"}
    assert dram["train_split"] == "none" and dram["classes"][-1] == "background"


def test_miniature_then_prepare_via_cli(tmp_path: Path, capsys) -> None:
    raw, out = tmp_path / "raw" / "dram", tmp_path / "prepared"
    assert main(["miniature", "--dataset", "dram", "--out", str(raw), "--seed", "1"]) == 0
    assert (raw / "MINIATURE").exists() and (raw / "DRAM_processed.zip").exists()
    assert not [p for p in raw.parent.iterdir() if p.name.startswith(".")]
    rc = main(["prepare", "--dataset", "dram", "--raw", str(raw), "--out", str(out), "--tile-size", "64"])
    assert rc == 0
    meta = read_json(out / "dram" / "meta.json")
    assert meta["counts"] == {"train": 0, "test": 4} and meta["synthetic"] and meta["tile_size"] == 64
    assert capsys.readouterr().out.strip().endswith(str(out / "dram"))


def test_miniature_refuses_to_overwrite_real_raw_data(tmp_path: Path, capsys) -> None:
    raw = tmp_path / "raw" / "cwfid"
    raw.mkdir(parents=True)
    (raw / "real.zip").write_bytes(b"precious")
    assert main(["miniature", "--dataset", "cwfid", "--out", str(raw)]) == 2
    assert "not a miniature" in capsys.readouterr().err
    assert (raw / "real.zip").read_bytes() == b"precious"
    (raw / "real.zip").unlink()
    assert main(["miniature", "--dataset", "cwfid", "--out", str(raw)]) == 0  # empty folder: fine
    assert (
        main(["miniature", "--dataset", "cwfid", "--out", str(raw), "--seed", "2"]) == 0
    )  # replace miniature


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["datasets", "--dataset", "nope"]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["download", "--dataset", "bdd100k", "--out", str(tmp_path / "raw")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mopeft download: error: bdd100k: these files must be downloaded by hand")
    assert "bdd100k_images_10k.zip" in err and "Traceback" not in err
    assert (
        main(["prepare", "--dataset", "cwfid", "--raw", str(tmp_path / "nothing"), "--out", str(tmp_path)])
        == 2
    )
    assert "cwfid: missing" in capsys.readouterr().err
