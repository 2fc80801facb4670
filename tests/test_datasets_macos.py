"""Raw data packed or copied on macOS prepares exactly like the clean miniature, for every dataset.

macOS adds a ``__MACOSX/`` copy of every zipped folder (AppleDouble ``._<name>`` files), puts
``._<name>`` next to each file in its tars and on non-Mac drives, and a ``.DS_Store`` in every
folder. These copies duplicate folder names (``find_dir`` would see two ``test_img``), match
patterns like ``*.png`` and do not decode as images; every lookup must skip them.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from mopeft.data.datasets.common import PrepareOptions
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import DATASETS, dataset_module
from mopeft.data.synthetic.miniature import (
    APPLE_DOUBLE,
    DS_STORE,
    macos_junk,
    read_zip,
    tar_gz_bytes,
    zip_bytes,
)


def _tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}  # type: ignore[union-attr]


def add_macos_junk(raw: Path, password: str | None) -> int:
    """Rewrite every zip / tar.gz under ``raw`` as macOS packs it and add ``._`` + ``.DS_Store``
    files to every folder; return how many junk entries were added."""
    added = 0
    for path in sorted(p for p in raw.rglob("*") if p.is_file() and p.name != "MINIATURE"):
        if zipfile.is_zipfile(path):
            members = read_zip(path, password.encode() if password else None)
            junk = macos_junk(members)
            path.write_bytes(zip_bytes(junk))
            added += len(junk) - len(members)
        elif path.name.endswith((".tar.gz", ".tgz")):
            members = _tar_members(path.read_bytes())
            junk = macos_junk(members, inline=True)
            path.write_bytes(tar_gz_bytes(junk))
            added += len(junk) - len(members)
        path.with_name(f"._{path.name}").write_bytes(APPLE_DOUBLE)
        (path.parent / ".DS_Store").write_bytes(DS_STORE)
        added += 2
    return added


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("key", sorted(DATASETS))
def test_macos_copies_are_ignored(key: str, tmp_path: Path) -> None:
    module = dataset_module(key)
    raw = tmp_path / "raw" / key
    module.write_miniature(raw, seed=0)
    options = PrepareOptions(tile_size=64)
    clean = tree(prepare_dataset(key, raw, tmp_path / "clean", options))
    assert add_macos_junk(raw, getattr(module, "PASSWORD", None)) > 0
    junk = tree(prepare_dataset(key, raw, tmp_path / "junk", PrepareOptions(tile_size=64)))
    assert sorted(junk) == sorted(clean)
    for name, data in clean.items():
        if name != "meta.json":  # its 'sources' hold the (changed) raw sha256s
            assert junk[name] == data, name
