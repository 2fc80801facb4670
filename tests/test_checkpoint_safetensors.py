"""The trained model as safetensors (model.safetensors): tensors and JSON metadata that tools other
than mopeft read, the same bytes for the same model, and the torch model.pt of older versions still
loading to the very same model."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import write_blocky_dataset
from safetensors import safe_open
from safetensors.torch import save as library_save

import mopeft.io
from mopeft import __version__
from mopeft.cli import main
from mopeft.io import DiskFull, sha256_file
from mopeft.methods.build import build_model
from mopeft.methods.checkpoint import (
    FORMAT,
    TORCH_FORMAT,
    load_model,
    model_config,
    read_checkpoint,
    save_model,
)
from mopeft.peft.state import trainable_state_dict
from mopeft.torch_files import UnreadableFile, save_safetensors, save_torch

TRAIN = {"dataset": "toy", "unit": "main", "steps": 3, "seed": 0, "synthetic": True}


def _model() -> tuple[torch.nn.Module, dict]:
    """A tiny LoRA model (random init, seed 0) with random non-zero trainable tensors."""
    cfg = model_config("tiny", 3, "lora", {"r": 2, "alpha": None}, 96, None, None, 0, ["a", "b", "c"])
    torch.manual_seed(cfg["init_seed"])
    model = build_model("tiny", 3, "lora", cfg["method_options"]).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model, cfg


def _image() -> torch.Tensor:
    return torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(3))


def test_save_load_round_trip_through_safetensors(tmp_path):
    model, cfg = _model()
    path = tmp_path / "model.safetensors"
    save_model(path, model, cfg, {"train": TRAIN})
    with safe_open(str(path), framework="pt") as f:  # the library itself, not mopeft's reader
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    assert meta["format"] == FORMAT and meta["mopeft_version"] == __version__
    assert json.loads(meta["config"]) == cfg and json.loads(meta["extra"]) == {"train": TRAIN}
    expected = trainable_state_dict(model)
    assert set(tensors) == set(expected) and all(torch.equal(tensors[k], expected[k]) for k in expected)
    payload = read_checkpoint(path)
    assert payload["config"] == cfg and payload["train"] == TRAIN and payload["format"] == FORMAT
    with torch.no_grad():
        assert torch.equal(load_model(path)(_image()), model(_image()))


def test_an_old_torch_model_pt_loads_to_the_same_model(tmp_path):
    """What save_model wrote before (torch.save of one dict, format mopeft-model-v1) still loads, and
    gives exactly the outputs of the safetensors file of the same model."""
    model, cfg = _model()
    old = tmp_path / "old" / "model.pt"
    payload = {
        "format": TORCH_FORMAT,
        "mopeft_version": "0.1.0",
        "config": cfg,
        "trainable": trainable_state_dict(model),
        "train": TRAIN,
    }
    save_torch(old, payload)  # the old code path
    new = tmp_path / "new" / "model.safetensors"
    save_model(new, model, cfg, {"train": TRAIN})
    a, b = read_checkpoint(old), read_checkpoint(new)
    assert a["config"] == b["config"] == cfg and a["train"] == b["train"] == TRAIN
    assert set(a["trainable"]) == set(b["trainable"])
    assert all(torch.equal(a["trainable"][k], b["trainable"][k]) for k in a["trainable"])
    with torch.no_grad():
        assert torch.equal(load_model(old)(_image()), load_model(new)(_image()))


def test_same_model_same_bytes_and_the_layout_is_the_librarys(tmp_path):
    model, cfg = _model()
    save_model(tmp_path / "a.safetensors", model, cfg, {"train": TRAIN})
    save_model(tmp_path / "b.safetensors", model, cfg, {"train": TRAIN})
    assert sha256_file(tmp_path / "a.safetensors") == sha256_file(tmp_path / "b.safetensors")
    # With one metadata entry (whose order cannot vary) the library writes exactly our bytes.
    tensors = {
        "w": torch.randn(3, 5, dtype=torch.float64),
        "b": torch.randn(7),
        "h": torch.randn(4, dtype=torch.bfloat16),
        "i": torch.arange(6),
        "m": torch.tensor([True, False, True]),
        "e": torch.zeros(0),
    }
    save_safetensors(tmp_path / "c.safetensors", tensors, {"k": "värde"})
    assert (tmp_path / "c.safetensors").read_bytes() == library_save(tensors, metadata={"k": "värde"})


def test_tensors_in_extra_round_trip_beside_the_trainable_ones(tmp_path):
    model, cfg = _model()
    ema = {"w": torch.randn(2, 3), "steps": [torch.tensor(1), 2]}
    save_model(tmp_path / "m.safetensors", model, cfg, {"train": TRAIN, "ema": ema})
    payload = read_checkpoint(tmp_path / "m.safetensors")
    assert torch.equal(payload["ema"]["w"], ema["w"]) and torch.equal(
        payload["ema"]["steps"][0], torch.tensor(1)
    )
    assert payload["ema"]["steps"][1] == 2 and not any(k.startswith("extra/") for k in payload["trainable"])
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        assert {k for k in f.keys() if k.startswith("extra/")} == {"extra/ema/w", "extra/ema/steps/0"}  # noqa: SIM118


def test_written_atomically_with_the_umask_permissions(tmp_path):
    model, cfg = _model()
    path = tmp_path / "cell" / "model.safetensors"
    old = os.umask(0o027)
    try:
        save_model(path, model, cfg)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temporary left


def test_a_disk_too_small_is_refused_before_writing_and_the_old_file_survives(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"w": torch.zeros(3)})
    old = path.read_bytes()
    monkeypatch.setattr(mopeft.io.shutil, "disk_usage", lambda _: SimpleNamespace(free=1 << 20))
    with pytest.raises(DiskFull) as info:
        save_safetensors(path, {"w": torch.zeros(1 << 20)})  # 4 MiB of float32, 1 MiB free
    assert str(path) in str(info.value) and "no space left on device" in str(info.value)
    assert path.read_bytes() == old and sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def _truncated(path: Path) -> Path:
    model, cfg = _model()
    save_model(path, model, cfg)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    return path


def _garbage(path: Path) -> Path:
    path.write_bytes(b"not a model at all")
    return path


@pytest.mark.parametrize("make", [_truncated, _garbage])
def test_a_damaged_model_file_is_one_error_naming_it(tmp_path, make):
    path = make(tmp_path / "model.safetensors")
    with pytest.raises(UnreadableFile) as info:
        read_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"{path}: truncated or not a safetensors file") and len(text.splitlines()) == 1
    assert "mopeft train" in text  # what to do


def test_a_safetensors_file_of_something_else_is_refused(tmp_path, capsys):
    other = tmp_path / "adapter_model.safetensors"
    save_safetensors(other, {"w": torch.zeros(2)}, {"format": "pt"})
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=1, n_test=1)
    assert main(["evaluate", "--model", str(other), "--data", str(ds), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(other) in err and "not a mopeft model" in err, err
    truncated = _truncated(tmp_path / "model.safetensors")
    assert main(["evaluate", "--model", str(truncated), "--data", str(ds), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(truncated) in err and "truncated" in err, err
