"""Benchmark structure and sanity (no timing assertions): side-by-side interleaving, a real training
step, ratios relative to full_ft, table + JSON output, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from mopeft.cli import main
from mopeft.measure import bench
from mopeft.measure.bench import BenchConfig, resolve


def test_cli_two_methods_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", "tiny", "--methods", "lora,full_ft", "--steps", "2", "--warmup", "1"]
    rc = main([*argv, "--batch-size", "1", "--device", "cpu", "--json", str(out)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "train %" in stdout and "lora" in stdout and "full_ft" in stdout
    res = json.loads(out.read_text())
    rows = {r["method"]: r for r in res["results"]}
    assert list(rows) == ["lora", "full_ft"]
    assert res["reference"] == "full_ft" and res["config"]["dtype"] == "fp32"
    assert rows["full_ft"]["train_pct"] == pytest.approx(100) and rows["full_ft"][
        "infer_pct"
    ] == pytest.approx(100)
    assert 0 < rows["lora"]["trainable_params"] < rows["full_ft"]["trainable_params"]
    for r in rows.values():
        for key in ("train_ms", "fwd_ms", "bwd_ms", "opt_ms", "infer_ms", "train_img_s", "infer_img_s"):
            assert r[key] > 0, key
        # medians of the parts need not add up in general, but each part is within the whole step
        assert max(r["fwd_ms"], r["bwd_ms"], r["opt_ms"]) <= r["train_ms"] * 1.000001
        assert r["train_img_s"] == pytest.approx(1000 / r["train_ms"])
        assert r["train_pct"] == pytest.approx(100 * r["train_ms"] / rows["full_ft"]["train_ms"])
        assert r["peak_train_mb"] is None  # memory is only measured on CUDA


def test_methods_are_interleaved_round_robin(monkeypatch):
    calls = []
    real = bench._train_step

    def spy(cfg, e, images, labels, timer):
        calls.append(e.name)
        return real(cfg, e, images, labels, timer)

    monkeypatch.setattr(bench, "_train_step", spy)
    cfg = BenchConfig(
        arch="tiny", methods=["decoder_ft", "full_ft"], batch_size=1, steps=2, warmup=1, device="cpu"
    )
    res = bench.run_bench(cfg)
    # every repetition runs every method once (rotated), never one method's steps in a block
    assert calls == ["decoder_ft", "full_ft", "full_ft", "decoder_ft", "decoder_ft", "full_ft"]
    assert all(len(r) for r in res["results"])


def test_train_step_really_trains_only_trainable_tensors():
    cfg = resolve(BenchConfig(arch="tiny", methods=["lora"], batch_size=1, device="cpu"))
    entry = bench._build(cfg, "lora")
    before = {n: p.detach().clone() for n, p in entry.model.named_parameters()}
    images = torch.randn(1, 3, 96, 96)
    labels = torch.randint(0, cfg.num_classes, (1, 96, 96))
    times, _ = bench._train_step(cfg, entry, images, labels, bench._Timer("cpu"))
    assert times["train"] == pytest.approx(times["fwd"] + times["bwd"] + times["opt"])
    changed = {n for n, p in entry.model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in entry.model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all(p.grad is None for p in entry.model.parameters())  # zero_grad(set_to_none) inside the step


def test_full_ft_reference_added_and_bad_input():
    assert resolve(BenchConfig(methods=["lora"], device="cpu")).methods == ["lora", "full_ft"]
    with pytest.raises(ValueError, match="unknown method"):
        resolve(BenchConfig(methods=["nope"], device="cpu"))
    with pytest.raises(ValueError, match="--steps"):
        resolve(BenchConfig(steps=0, device="cpu"))
