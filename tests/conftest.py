"""Shared fixtures: tiny prepared datasets written directly in the prepared layout."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from mopeft.data.images import save_image, save_label
from mopeft.data.synthetic.miniature import blob_label, image_for
from mopeft.io import write_json

# One intra-op thread unless the caller asks for more (OMP_NUM_THREADS=2 reruns the suite with two).
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


Pair = tuple[np.ndarray, np.ndarray]


def _write_dataset(
    root: Path,
    key: str,
    num_classes: int,
    n_train: int,
    n_test: int,
    train_split: str,
    tasks: tuple[str, ...],
    make_pair: Callable[[], Pair],
) -> Path:
    """Write ``make_pair()`` images/labels into the prepared layout (+ meta.json)."""
    out = root / key
    counts = {}
    roots = [out / t for t in tasks] if tasks else [out]
    splits = {"train": n_train if train_split == "official" else 0, "test": n_test}
    for sroot in roots:
        for split, n in splits.items():
            (sroot / split / "images").mkdir(parents=True, exist_ok=True)
            (sroot / split / "labels").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image, label = make_pair()
                save_image(sroot / split / "images" / f"{split}_{i:03d}.png", image)
                save_label(sroot / split / "labels" / f"{split}_{i:03d}.png", label, num_classes)
            counts[(f"{sroot.name}/" if tasks else "") + split] = n
    write_json(
        out / "meta.json",
        {
            "dataset": key,
            "name": key,
            "domain": "Test",
            "classes": [f"c{i}" for i in range(num_classes)],
            "num_classes": num_classes,
            "ignore_index": 255,
            "channels": "RGB",
            "tasks": list(tasks),
            "train_split": train_split,
            "counts": counts,
            "sources": {},
            "synthetic": True,
            "tile_size": 1024,
        },
    )
    return out


def combine_args(
    units: list[Path], meta: Path, out: Path, variant: str = "default", seed: int = 0
) -> list[str]:
    """`mopeft combine` of ``units`` into the cell ``out`` (default variant, seed 0 unless given)."""
    return [
        "combine", "--variant", variant, "--seed", str(seed), "--units", *map(str, units),
        "--dataset-meta", str(meta), "--out", str(out),
    ]  # fmt: skip


def write_blocky_dataset(
    root: Path,
    n_train: int = 4,
    n_test: int = 3,
    num_classes: int = 3,
    size: tuple[int, int] = (40, 56),
    seed: int = 0,
    key: str = "toy",
    train_split: str = "official",
    tasks: tuple[str, ...] = (),
) -> Path:
    """Images whose colour encodes the class of each block, so a model can learn the mapping."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 256, size=(num_classes, 3))

    def pair() -> Pair:
        h, w = size
        coarse = rng.integers(0, num_classes, size=(h // 8 + 1, w // 8 + 1))
        label = np.kron(coarse, np.ones((8, 8), dtype=np.int64))[:h, :w].astype(np.uint8)
        label[0, 0] = 255  # an ignored pixel
        image = palette[label.clip(max=num_classes - 1)].astype(np.int64)
        image = (image + rng.integers(-20, 21, size=image.shape)).clip(0, 255).astype(np.uint8)
        return image, label

    return _write_dataset(root, key, num_classes, n_train, n_test, train_split, tasks, pair)


def write_blob_dataset(
    root: Path,
    n_train: int = 8,
    n_test: int = 4,
    size: tuple[int, int] = (64, 80),
    seed: int = 0,
    key: str = "blobs",
) -> Path:
    """Binary task like the demo's Kvasir/DeepCrack miniatures: coloured ellipse blobs on a ground of
    another colour (the miniatures' own generators), a domain the pretraining scenes never show."""
    rng = np.random.default_rng(seed)

    def pair() -> Pair:
        label = blob_label(rng, *size, [0, 1], n=3)
        return image_for(rng, label), label

    return _write_dataset(root, key, 2, n_train, n_test, "official", (), pair)


@pytest.fixture
def toy_dataset(tmp_path: Path) -> Path:
    return write_blocky_dataset(tmp_path / "prepared")


@pytest.fixture(scope="module")
def blocks():
    """The tiny encoder's frozen SAM blocks (windowed 0, 2; global 1, 3) with random rel-pos tables."""
    from mopeft.model.arch import ARCHS, build_sam_parts

    torch.manual_seed(0)
    enc, _, _ = build_sam_parts(ARCHS["tiny"])
    for blk in enc.blocks:  # SAM zero-inits rel-pos; random tables make the bias matter in the tests
        blk.attn.rel_pos_h.data.normal_(0, 0.5)
        blk.attn.rel_pos_w.data.normal_(0, 0.5)
        for p in blk.parameters():
            p.requires_grad_(False)
    return enc.blocks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Files with end-to-end (``slow``) tests first, each file's tests kept together and in order.

    Why: `make test` runs two workers (pytest-xdist, ``--dist loadfile``) that take whole files in
    collection order; the demo, SLURM and own-data runs take minutes each, so they start at once and
    the short tests fill the other worker, instead of a long run starting last.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)  # stable: order within a file kept
