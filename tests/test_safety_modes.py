"""Artefacts are written with the umask's permissions (issue 11): 0644 files and 0755 folders
under umask 022, so colleagues on a shared cluster can read prepared data, checkpoints and tables."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from mopeft.cli import main
from mopeft.io import atomic_dir, atomic_path, write_json


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_outputs_get_the_umasks_permissions(tmp_path, mask, file_mode, dir_mode):
    """Not mkstemp's 0600 (colleagues could not read shared data) nor a forced 0755."""
    with _umask(mask):
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_path(tmp_path / "b.npz", suffix=".npz.tmp") as tmp, open(tmp, "wb") as f:
            np.savez(f, x=np.zeros(2))
        with atomic_path(tmp_path / "c.pt") as tmp:
            torch.save({"x": torch.zeros(1)}, tmp)
        with atomic_dir(tmp_path / "prepared") as tmp:
            (tmp / "meta.json").write_text("{}")
    for name in ("a.json", "b.npz", "c.pt", "prepared/meta.json"):
        assert _mode(tmp_path / name) == file_mode, name
    assert _mode(tmp_path / "prepared") == dir_mode
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_miniature_raw_folder_is_readable_by_others(tmp_path):
    with _umask(0o022):
        assert main(["miniature", "--dataset", "deepcrack", "--out", str(tmp_path / "raw")]) == 0
    assert _mode(tmp_path / "raw") == 0o755  # mkdtemp's 0700 before
