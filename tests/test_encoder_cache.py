"""The encoder cache within its memory budgets: what does not fit is recomputed, never wrong.

A training job's cache used to spill to host memory without limit (30 epochs of FloodNet: ~132 GiB
against a 48 GB SLURM job). These tests pin the budget (bytes stored never above it), that a
budget only costs speed (the same losses and weights, bit for bit, as an unbudgeted cache and as
no cache), how the default budget reads /proc/meminfo and the cgroup limits, and the DataLoader
workers' cap by the CPUs the process may use.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from conftest import write_blocky_dataset

import mopeft.commands.train as train_command
from mopeft.cli import main
from mopeft.data.loading.loader import SegmentationPairs
from mopeft.data.prepared.units import load_unit
from mopeft.methods.checkpoint import build_from_config, model_config
from mopeft.peft.state import trainable_state_dict
from mopeft.train.encoder_cache import (
    MIB,
    EncoderCache,
    available_host_bytes,
    default_host_budget,
    pinned_bytes,
)
from mopeft.train.loop import TrainSettings, fingerprint, train

SIZE = 96
GIB = 1 << 30


def _cell(tmp_path: Path, n_train: int = 5) -> tuple[dict, SegmentationPairs]:
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=n_train, n_test=1)
    unit = load_unit(ds, "main")
    return model_config("tiny", unit.num_classes, "decoder_ft", {}, SIZE, None, None, 0), SegmentationPairs(
        unit.train, SIZE
    )


def _entry_bytes(cfg: dict) -> int:
    """Bytes of one cached embedding of the tiny model (what the cache counts per entry)."""
    model = build_from_config(cfg)
    with torch.no_grad():
        return model.encode(torch.zeros(1, 3, SIZE, SIZE))[0].untyped_storage().nbytes()


def test_a_tiny_host_budget_stores_what_fits_and_trains_the_same_bits(tmp_path, caplog, monkeypatch):
    cfg, data = _cell(tmp_path)
    entry = _entry_bytes(cfg)
    budget_mb = 3.5 * entry / MIB  # room for three entries and a half
    caches: list[EncoderCache] = []
    real_cache = EncoderCache

    def recording_cache(*args, **kwargs) -> EncoderCache:
        caches.append(real_cache(*args, **kwargs))
        return caches[-1]

    monkeypatch.setattr("mopeft.train.loop.EncoderCache", recording_cache)
    runs = {}
    for name, mode, host_mb in (("off", "off", None), ("all", "auto", None), ("budget", "auto", budget_mb)):
        model = build_from_config(cfg)
        settings = TrainSettings(
            steps=10, batch_size=2, lr=1e-2, seed=3, encoder_cache=mode, cache_host_mb=host_mb
        )
        with caplog.at_level(logging.WARNING, logger="mopeft.train.encoder_cache"):
            result = train(model, data, settings, tmp_path / f"{name}.state")
        runs[name] = (result, trainable_state_dict(model))
    unbounded, budgeted = caches
    assert unbounded.summary()["not_stored"] == 0 and len(unbounded) > 3  # the default budget holds all
    c = runs["budget"][0].timing["cache"]
    assert c["entries"] == 3 and c["host_bytes"] == 3 * entry <= budgeted.host_bytes
    assert c["not_stored"] == len(unbounded) - 3 and c["recomputed"] > 0
    assert c["hits"] + c["misses"] == unbounded.hits + unbounded.misses  # the same draws
    assert c["misses"] == 3 + c["not_stored"] + c["recomputed"]  # every refused draw ran the encoder
    full = [r for r in caplog.records if "budget reached" in r.getMessage()]
    assert len(full) == 1  # logged once, not per refused entry
    assert "3 embeddings" in full[0].getMessage() and "per epoch" in full[0].getMessage()
    (loss_off, w_off), (loss_all, w_all), (loss_b, w_b) = (
        (r.losses, w) for r, w in (runs["off"], runs["all"], runs["budget"])
    )
    assert loss_b == loss_all == loss_off  # bit for bit, not within a tolerance
    for k in w_off:
        assert torch.equal(w_b[k], w_all[k]) and torch.equal(w_b[k], w_off[k]), k


def test_device_budget_then_host_budget_then_recompute():
    """Two tiers on a non-CPU device (the meta device stands in for a GPU: accounting only)."""
    entry = 4 * 32 * 6 * 6
    cache = EncoderCache(torch.device("meta"), device_bytes=2 * entry, host_bytes=entry + entry // 2)
    images = torch.randn(5, 3, 8, 8)
    calls = []

    def encode(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.zeros(1, 32, 6, 6)

    cache.embeddings([0, 1, 2, 3, 4], [False] * 5, images, encode)
    cache.embeddings([0, 1, 2, 3, 4], [False] * 5, images, encode)
    s = cache.summary()
    assert (s["device_bytes"], s["host_bytes"], s["entries"]) == (2 * entry, entry, 3)
    assert (s["hits"], s["misses"], s["recomputed"], s["not_stored"]) == (3, 7, 2, 2)
    assert len(calls) == 7


def test_the_cpu_device_is_host_memory():
    """On the CPU the device budget does not apply: every entry counts against the host budget."""
    cache = EncoderCache(torch.device("cpu"), device_bytes=1 << 40, host_bytes=0)
    out = cache.embeddings([0], [True], torch.randn(1, 3, 4, 4), lambda x: x * 2)
    assert torch.equal(
        out, cache.embeddings([0], [True], torch.randn(1, 3, 4, 4) * 0 + out / 2, lambda x: x * 2)
    )
    assert len(cache) == 0 and cache.summary()["host_bytes"] == 0 and cache.recomputed == 1


def test_pinned_entries_are_counted_as_the_allocator_rounds_them():
    assert pinned_bytes(4 * MIB) == 4 * MIB
    assert pinned_bytes(256 * 48 * 48 * 4) == 4 * MIB  # 2.25 MiB at 768 px holds 4 MiB of pinned memory


def test_bf16_storage_rounds_every_draw_the_same_way():
    """The opt-in bf16 entries: half the bytes, and a stored or a refused entry feed the same values."""
    emb = torch.randn(1, 32, 6, 6)
    rounded = emb.to(torch.bfloat16).float()
    assert not torch.equal(rounded, emb)
    stored = EncoderCache(torch.device("cpu"), host_bytes=1 << 20, dtype="bf16")
    refused = EncoderCache(torch.device("cpu"), host_bytes=0, dtype="bf16")
    x = torch.zeros(1, 3, 4, 4)
    for cache in (stored, refused):
        for _ in range(2):
            out = cache.embeddings([0], [False], x, lambda _: emb)
            assert out.dtype == torch.float32 and torch.equal(out[0], rounded[0])
    assert stored.summary()["host_bytes"] == emb.numel() * 2
    with pytest.raises(ValueError, match="dtype"):
        EncoderCache(torch.device("cpu"), host_bytes=0, dtype="fp16")


def test_budgets_leave_the_run_fingerprint_alone_but_bf16_does_not(tmp_path):
    """A resumed job with another budget is the same run; rounded embeddings are a different one."""
    cfg, data = _cell(tmp_path, n_train=2)
    model = build_from_config(cfg)
    plain = fingerprint(model, TrainSettings(steps=3), data)
    assert fingerprint(model, TrainSettings(steps=3, cache_host_mb=1, cache_device_mb=2), data) == plain
    assert fingerprint(model, TrainSettings(steps=3, cache_dtype="bf16"), data) != plain
    # without the cache nothing is rounded: bf16 storage does not change that run
    assert fingerprint(
        model, TrainSettings(steps=3, cache_dtype="bf16", encoder_cache="off"), data
    ) == fingerprint(model, TrainSettings(steps=3, encoder_cache="off"), data)


def _fake_system(root: Path, meminfo_kb: int | None, cgroup: str, limits: dict[str, str]) -> dict:
    if meminfo_kb is not None:
        (root / "meminfo").write_text(
            f"MemTotal: 99999999 kB\nMemFree: 1 kB\nMemAvailable: {meminfo_kb} kB\n"
        )
    (root / "cgroup").write_text(cgroup)
    for rel, value in limits.items():
        (root / "fs" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "fs" / rel).write_text(value + "\n")
    return {"meminfo": root / "meminfo", "proc_cgroup": root / "cgroup", "cgroup_root": root / "fs"}


def test_default_budget_is_half_of_meminfo_without_a_cgroup_limit(tmp_path):
    paths = _fake_system(tmp_path, 8 * 1024 * 1024, "0::/user.slice\n", {"user.slice/memory.max": "max"})
    assert available_host_bytes(**paths) == 8 * GIB
    assert default_host_budget(**paths) == 4 * GIB


def test_default_budget_takes_the_tightest_cgroup_v2_ancestor(tmp_path):
    """SLURM limits job_<id>; the process sits further down, in step_<n>/user/task_0."""
    paths = _fake_system(
        tmp_path,
        64 * 1024 * 1024,
        "0::/system.slice/slurmstepd.scope/job_7/step_0/user/task_0\n",
        {
            "system.slice/slurmstepd.scope/job_7/memory.max": str(48000 * MIB),
            "system.slice/slurmstepd.scope/job_7/step_0/memory.max": "max",
            "system.slice/slurmstepd.scope/job_7/step_0/user/task_0/memory.max": "max",
        },
    )
    assert available_host_bytes(**paths) == 48000 * MIB
    assert default_host_budget(**paths) == 24000 * MIB


def test_default_budget_reads_cgroup_v1_and_ignores_its_unlimited_value(tmp_path):
    paths = _fake_system(
        tmp_path,
        64 * 1024 * 1024,
        "12:cpu,cpuacct:/slurm/uid_1/job_9\n5:memory:/slurm/uid_1/job_9\n",
        {
            "memory/memory.limit_in_bytes": "9223372036854771712",
            "memory/slurm/uid_1/job_9/memory.limit_in_bytes": str(6 * GIB),
        },
    )
    assert default_host_budget(**paths) == 3 * GIB
    # a MemAvailable below the cgroup limit wins
    (tmp_path / "meminfo").write_text("MemAvailable: 1048576 kB\n")
    assert default_host_budget(**paths) == GIB // 2


def test_default_budget_without_proc_falls_back_to_physical_memory(tmp_path):
    missing = {"meminfo": tmp_path / "no", "proc_cgroup": tmp_path / "no", "cgroup_root": tmp_path / "no"}
    assert available_host_bytes(**missing) is None
    assert default_host_budget(**missing) > 0
    # cgroup v1's "no limit" is a huge number, not a limit: alone, it says nothing either
    paths = _fake_system(tmp_path, None, "5:memory:/\n", {"memory/memory.limit_in_bytes": str(2**63 - 4096)})
    assert available_host_bytes(**paths) is None


def _args(workers: int | None, device: str = "cuda") -> argparse.Namespace:
    return argparse.Namespace(workers=workers, device=device)


def test_default_workers_are_capped_by_the_usable_cpus(monkeypatch, caplog):
    monkeypatch.setattr(train_command, "resolve_device", lambda name: torch.device(name))
    for cpus, expected in ((1, 0), (2, 1), (3, 2), (8, 4), (64, 4)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cpus: set(range(n)), raising=False)
        assert train_command._workers(_args(None)) == expected, cpus
        assert train_command._workers(_args(None, "cpu")) == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    with caplog.at_level(logging.WARNING, logger="mopeft.commands.train"):
        assert train_command._workers(_args(2)) == 2
        assert not caplog.records
        assert train_command._workers(_args(5)) == 5  # honoured, with a warning
    assert len(caplog.records) == 1 and "--workers 5" in caplog.records[0].getMessage()
    with pytest.raises(ValueError, match="--workers"):
        train_command._workers(_args(-1))


def test_cache_flags_reach_the_run_and_bad_values_name_the_flag(tmp_path, capsys):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    base = ["train", "--data", str(ds), "--method", "decoder_ft", "--steps", "4", "--arch", "tiny"]
    base += ["--image-size", str(SIZE), "--batch-size", "2", "--workers", "0"]
    for flag in ("--cache-host-mb", "--cache-device-mb"):
        assert main([*base, flag, "-1", "--out", str(tmp_path / "bad")]) == 2
        assert flag in capsys.readouterr().err
    out = tmp_path / "cell"
    assert main([*base, "--cache-host-mb", "0", "--cache-device-mb", "0", "--out", str(out)]) == 0
    cache = json.loads((out / "train_log.json").read_text())["timing"]["cache"]
    assert cache["entries"] == 0 and cache["host_budget_bytes"] == 0 and cache["not_stored"] > 0
    assert cache["dtype"] == "fp32"
