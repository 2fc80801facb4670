"""A full disk while writing an artefact (issue 19): one error naming the file and saying "no space
left on device", instead of `basic_ios::clear: iostream error ... unexpected pos`; the temporary is
removed and the previous file survives."""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import write_blocky_dataset

import mopeft.io
from mopeft.cli import main
from mopeft.io import DiskFull, atomic_path, write_json
from mopeft.torch_files import save_torch

FAST = ["--arch", "tiny", "--batch-size", "2", "--lr", "1e-2", "--weight-decay", "0"]


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _torch_write_failed(obj, f, *args, **kwargs):
    """What torch.save raises when the disk fills under its C++ stream writer (after a partial write)."""
    (f.write if hasattr(f, "write") else Path(f).write_bytes)(b"PK\x03\x04partial")
    raise RuntimeError(
        "basic_ios::clear: iostream error; [enforce fail at inline_container.cc:626] unexpected pos"
    )


def _only_old_file(path: Path, old: bytes) -> None:
    assert path.read_bytes() == old  # the previous version survives
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temporary left


def _check(exc: DiskFull, path: Path) -> None:
    text = str(exc)
    assert isinstance(exc, ValueError) and isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert str(path) in text and "no space left on device" in text and len(text.splitlines()) == 1


def test_enospc_inside_atomic_path_names_the_destination(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_json(path, {"old": 1})
    old = path.read_bytes()
    with pytest.raises(DiskFull) as info, atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write("{")
        _enospc()
    _check(info.value, path)
    _only_old_file(path, old)


@pytest.mark.parametrize("failure", [_enospc, _torch_write_failed])
def test_torch_save_on_a_full_disk_names_the_file(tmp_path, monkeypatch, failure):
    path = tmp_path / "train_state.pt"
    save_torch(path, {"w": torch.zeros(3)})
    old = path.read_bytes()
    monkeypatch.setattr(torch, "save", failure)
    with pytest.raises(DiskFull) as info:
        save_torch(path, {"w": torch.ones(3)})
    _check(info.value, path)
    _only_old_file(path, old)


def test_a_disk_too_small_for_the_tensors_is_refused_before_writing(tmp_path, monkeypatch):
    path = tmp_path / "train_state.pt"
    save_torch(path, {"w": torch.zeros(3)})
    old = path.read_bytes()
    monkeypatch.setattr(mopeft.io.shutil, "disk_usage", lambda _: SimpleNamespace(free=1 << 20))

    def never(*args, **kwargs):
        raise AssertionError("torch.save ran although the disk is known to be too small")

    monkeypatch.setattr(torch, "save", never)
    with pytest.raises(DiskFull) as info:
        save_torch(path, {"w": torch.zeros(1 << 20)})  # 4 MiB of float32, 1 MiB free
    _check(info.value, path)
    assert "4 MiB" in str(info.value)
    _only_old_file(path, old)


def test_mopeft_train_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=2, n_test=1)
    out = tmp_path / "cell"
    monkeypatch.setattr(torch, "save", _torch_write_failed)
    argv = ["train", "--data", str(ds), "--method", "lora", "--steps", "2", *FAST, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(out / "train_state.pt") in err and "no space left on device" in err
    assert not any(p.name.startswith(".train_state.pt") for p in out.iterdir())  # no temporary left


def test_npz_files_are_byte_identical_for_identical_arrays_and_load_like_numpys(tmp_path, monkeypatch):
    """numpy stamps zip members with the wall clock: write_npz does not, so reruns keep sha256."""
    import time

    import numpy as np

    from mopeft.io import sha256_file, write_npz

    arrays = {"images": np.array(["a.png", "b.png"]), "counts": np.arange(12).reshape(2, 6)}
    write_npz(tmp_path / "a.npz", **arrays)
    later = time.time() + 3 * 86400
    monkeypatch.setattr(time, "time", lambda: later)  # what zipfile stamps a member with
    write_npz(tmp_path / "b.npz", **arrays)
    np.savez(tmp_path / "numpy.npz", **arrays)
    assert sha256_file(tmp_path / "a.npz") == sha256_file(tmp_path / "b.npz")
    with np.load(tmp_path / "a.npz") as ours, np.load(tmp_path / "numpy.npz") as theirs:
        assert list(ours) == list(theirs)
        for key in arrays:
            np.testing.assert_array_equal(ours[key], theirs[key])
