"""Reading the prepared layout: (image, label) pairs of a split, and the folds of a train-less set."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mopeft.data.errors import PrepareError
from mopeft.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_pairs(split_dir: Path) -> list[tuple[Path, Path]]:
    """(image, label) pairs of one split, matched by stem; any unmatched file is an error."""
    images = {
        p.stem: p for p in sorted((split_dir / "images").glob("*")) if p.suffix.lower() in IMAGE_SUFFIXES
    }
    labels = {p.stem: p for p in sorted((split_dir / "labels").glob("*.png"))}
    if set(images) != set(labels):
        only_i = sorted(set(images) - set(labels))[:3]
        only_l = sorted(set(labels) - set(images))[:3]
        raise PrepareError(f"{split_dir}: images without labels {only_i}, labels without images {only_l}")
    return [(images[s], labels[s]) for s in sorted(images)]


def kfold_assignment(stems: list[str], k: int) -> dict[str, int]:
    """Deterministic fold of each test image: sorted stems dealt round-robin into k folds."""
    if k < 2:
        raise InputError(f"kfold needs k >= 2 (--kfold), got {k}")
    return {s: i % k for i, s in enumerate(sorted(stems))}


def hashed_order(stems: list[str], seed: int) -> list[str]:
    """``stems`` sorted by sha256(seed:stem): a fixed pseudo-random order that needs no random
    generator (whose algorithm may change between versions) and in which a stem keeps its place
    relative to the others when stems are added. Folder datasets' test splits and Fig. 4.1's
    example images are its first items."""
    return sorted(stems, key=lambda s: (hashlib.sha256(f"{seed}:{s}".encode()).hexdigest(), s))
