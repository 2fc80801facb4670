"""Checkpoints (issue 19): identical content gives identical bytes (torch.save recorded the random
temporary file name inside the zip), and a damaged or hostile file is one error naming it, without
torch's advice to load it with ``weights_only=False``."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import write_blocky_dataset

from mopeft.cli import main
from mopeft.io import sha256_file
from mopeft.methods.checkpoint import read_checkpoint
from mopeft.model.weights import load_checkpoint
from mopeft.torch_files import UnreadableFile, load_torch, save_torch

FAST = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]


def _state() -> dict[str, torch.Tensor]:
    return {"a": torch.arange(12.0).reshape(3, 4), "b": torch.ones(5, dtype=torch.int64)}


def test_two_saves_of_the_same_tensors_are_byte_identical(tmp_path):
    one, two = tmp_path / "one" / "train_state.pt", tmp_path / "two" / "train_state.pt"
    save_torch(one, _state())
    save_torch(two, _state())
    assert sha256_file(one) == sha256_file(two)
    names = zipfile.ZipFile(one).namelist()
    assert all(n.startswith("archive/") for n in names), names  # no temporary file name inside
    loaded = torch.load(one, weights_only=True)
    assert torch.equal(loaded["a"], _state()["a"])


def test_two_identical_trainings_write_the_same_model_file(tmp_path):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    for name in ("a", "b"):
        argv = [
            "train",
            "--data",
            str(ds),
            "--method",
            "lora",
            "--steps",
            "2",
            *FAST,
            "--out",
            str(tmp_path / name),
        ]
        assert main(argv) == 0
    a, b = tmp_path / "a" / "model.safetensors", tmp_path / "b" / "model.safetensors"
    assert sha256_file(a) == sha256_file(b)


def _truncated(path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(_state(), buffer)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def _garbage(path: Path) -> Path:
    """Bytes that torch's safe unpickler reads as unknown opcodes: not a torch file, not hostile."""
    path.write_bytes(bytes(range(256)) * 4)
    return path


def _hostile(path: Path) -> Path:
    class Hostile:
        def __reduce__(self):  # unpickling would call print("pwned")
            return (print, ("pwned",))

    torch.save({"model": Hostile()}, path)
    return path


@pytest.mark.parametrize("make", [_truncated, _garbage, _hostile])
@pytest.mark.parametrize("reader", [read_checkpoint, load_checkpoint, load_torch])
def test_a_damaged_or_hostile_file_is_one_error_naming_it(tmp_path, capsys, make, reader):
    path = make(tmp_path / "file.pt")
    with pytest.raises(UnreadableFile) as info:
        reader(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and len(text.splitlines()) == 1
    assert "weights_only" not in text and "pwned" not in capsys.readouterr().out
    assert ("refuses to unpickle" if make is _hostile else "truncated or not a PyTorch file") in text


def test_cli_refuses_a_hostile_base_checkpoint_and_a_truncated_model(tmp_path, capsys):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    hostile = _hostile(tmp_path / "sam.pth")
    argv = ["train", "--data", str(ds), "--method", "lora", "--steps", "1", *FAST]
    base = ["--checkpoint", str(hostile), "--checkpoint-sha256", sha256_file(hostile)]
    assert main([*argv, *base, "--out", str(tmp_path / "cell")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(hostile) in err and "mopeft weights" in err, err
    assert "weights_only" not in err and "pwned" not in err
    model = _truncated(tmp_path / "model.pt")  # a model file of older mopeft versions (torch format)
    assert main(["evaluate", "--model", str(model), "--data", str(ds), "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(model) in err and "truncated" in err, err
