"""The environment record (issue 21): every result JSON says which software and GPU produced it,
the tables' provenance lists the distinct environments of their inputs, and Table 4.5 marks
timings from more than one GPU model."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

from conftest import write_blocky_dataset

from mopeft.cli import main
from mopeft.environment import KEYS, environment_record, package_lines, write_package_set
from mopeft.model.weights import TINY_ASSET, TINY_SHA256
from mopeft.report.efficiency import build_4_5
from mopeft.report.provenance import collect_provenance, provenance_lines

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--arch",
    "tiny",
    "--batch-size",
    "2",
    "--checkpoint",
    str(TINY_ASSET),
    "--checkpoint-sha256",
    TINY_SHA256,
]


def test_record_has_every_key_is_stable_and_names_this_python_and_checkout():
    record = environment_record()
    assert tuple(record) == KEYS
    assert record == environment_record()  # deterministic: reruns write the same metrics.json
    json.dumps(record)  # JSON as it is
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["gpu_count"] >= 0 and (record["gpu_name"] is None) == (record["gpu_count"] == 0)
    text = "".join(f"{line}\n" for line in package_lines())
    assert record["packages_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert any(line.lower().startswith("numpy==") for line in package_lines())


def test_importing_the_module_does_not_import_torch():
    """A base module: the torch-free DAG imports it."""
    code = "import sys, mopeft.environment; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_package_list_is_written_once_under_its_hash(tmp_path):
    path = write_package_set(tmp_path)
    assert path.name == f"packages-{environment_record()['packages_sha256'][:12]}.txt"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == environment_record()["packages_sha256"]
    path.write_text("kept\n")  # present: not rewritten (its name is its content's hash)
    assert write_package_set(tmp_path) == path and path.read_text() == "kept\n"


def test_train_log_and_metrics_carry_the_record_and_a_table_lists_it(tmp_path):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    out = tmp_path / "cell"
    assert (
        main(["train", "--data", str(ds), "--method", "lora", "--steps", "2", *TINY, "--out", str(out)]) == 0
    )
    record = environment_record()
    assert json.loads((out / "train_log.json").read_text())["environment"] == record
    assert (out / f"packages-{record['packages_sha256'][:12]}.txt").is_file()
    model = str(out / "model.safetensors")
    evaluate = ["evaluate", "--model", model, "--data", str(ds), "--out", str(out / "eval")]
    assert main(evaluate) == 0
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics["environment"]) == set(KEYS) and metrics["environment"] == record

    lines = provenance_lines(collect_provenance(None, [metrics]))
    (line,) = [line for line in lines if line.startswith("Environment")]
    assert f"torch {record['torch']}" in line and f"packages {record['packages_sha256'][:12]}" in line
    # A cell written before the change has no record: the table says so, beside the known one.
    lines = provenance_lines(collect_provenance(None, [metrics, {"miou": 1.0}]))
    assert "Environments: 2 distinct (the inputs were produced on different setups)" in lines
    assert any("unknown (written before environments were recorded)" in line for line in lines)


def test_combined_cell_lists_its_units_environments():
    base = {**environment_record(), "gpu_name": "GPU A", "gpu_count": 1}
    other = {**base, "gpu_name": "GPU B"}
    cell = {"environment": environment_record(), "unit_environments": [base, other]}
    lines = provenance_lines(collect_provenance(None, [cell]))
    assert any("GPU GPU A" in line for line in lines) and any("GPU GPU B" in line for line in lines)


def _bench(path: Path, gpu: str, lora_pct: float) -> Path:
    rows = [
        {"method": m, "train_pct": p, "infer_pct": p} for m, p in (("full_ft", 100.0), ("lora", lora_pct))
    ]
    env = {**environment_record(), "gpu_name": gpu, "gpu_count": 1}
    cfg = {"num_classes": 10, "device": "cuda"}
    path.write_text(json.dumps({"config": cfg, "device_name": gpu, "results": rows, "environment": env}))
    return path


def test_table_4_5_marks_timings_from_two_gpu_models(tmp_path, caplog):
    benches = [
        _bench(tmp_path / "a.json", "NVIDIA H100", 50.0),
        _bench(tmp_path / "b.json", "NVIDIA A100", 60.0),
    ]
    args = argparse.Namespace(params=[], bench=benches, flops=[], config=None, out=tmp_path / "t")
    with caplog.at_level(logging.WARNING, logger="mopeft.report.efficiency"):
        build_4_5(args)
    md = (tmp_path / "t.md").read_text()
    assert "MIXED DEVICES" in md and "NVIDIA H100 (a.json)" in md and "NVIDIA A100 (b.json)" in md
    assert "Environments: 2 distinct" in md
    assert any("different devices" in r.getMessage() for r in caplog.records)

    # One GPU model: named, no mark.
    args.bench, args.out = str(benches[0]), tmp_path / "one"
    build_4_5(args)
    md = (tmp_path / "one.md").read_text()
    assert "Timings measured on: NVIDIA H100." in md and "MIXED" not in md


def test_table_cli_takes_several_bench_files_and_marks_mixed_devices(tmp_path):
    from mopeft.cli import main

    a = _bench(tmp_path / "a.json", "NVIDIA H100", 50.0)
    b = _bench(tmp_path / "b.json", "NVIDIA A100", 60.0)
    config = tmp_path / "config.yaml"
    config.write_text("run: t\n")
    common = ["--config", str(config), "--out"]
    assert main(["table", "4.5", "--bench", str(a), str(b), *common, str(tmp_path / "t")]) == 0
    md = (tmp_path / "t.md").read_text()
    assert "MIXED DEVICES" in md and "NVIDIA A100 (b.json)" in md
    assert main(["table", "4.5", "--bench", str(a), *common, str(tmp_path / "u")]) == 0
    assert "MIXED" not in (tmp_path / "u.md").read_text()


def test_bench_json_and_detections_carry_the_record(tmp_path):
    out = tmp_path / "bench" / "bench.json"
    argv = ["bench", "--arch", "tiny", "--methods", "lora,full_ft", "--steps", "1", "--warmup", "0"]
    assert main([*argv, "--batch-size", "1", "--device", "cpu", "--json", str(out)]) == 0
    record = environment_record()
    assert json.loads(out.read_text())["environment"] == record
    assert (out.parent / f"packages-{record['packages_sha256'][:12]}.txt").is_file()

    from mopeft.data.datasets.common import PrepareOptions
    from mopeft.data.prepared.write import prepare_dataset
    from mopeft.data.registry import dataset_module

    raw, prepared = tmp_path / "raw", tmp_path / "prepared"
    dataset_module("fair1m").write_miniature(raw, seed=0)
    ds = prepare_dataset("fair1m", raw, prepared, PrepareOptions(tile_size=64, extra={"test_every": 3}))
    cell = tmp_path / "cell"
    args = [
        "train",
        "--data",
        str(ds),
        "--method",
        "lora",
        "--arch",
        "tiny",
        "--steps",
        "1",
        "--out",
        str(cell),
    ]
    assert main([*args, "--batch-size", "2"]) == 0
    dets = tmp_path / "dets" / "dets.json"
    model = str(cell / "model.safetensors")
    assert main(["detect", "--model", model, "--data", str(ds), "--out", str(dets)]) == 0
    assert json.loads(dets.read_text())["environment"] == record
