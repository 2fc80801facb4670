"""Run one dataset's preparer safely: verify sources, prepare into a temporary folder, validate the
layout (and count the pixels of every class per split, refusing a class that never occurs:
:mod:`mopeft.data.prepared.coverage`), write ``meta.json`` last and move the folder into place atomically.

A folder under the prepared root either is complete (it has ``meta.json``) or does not exist, so
Snakemake can use ``<root>/<key>/meta.json`` as the rule's output.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mopeft import __version__
from mopeft.data.datasets.common import IGNORE, PrepareError, PrepareOptions
from mopeft.data.prepared.coverage import CoverageRules, check_coverage, histogram, pixels_meta
from mopeft.data.prepared.layout import list_pairs
from mopeft.data.registry import dataset_module
from mopeft.data.sources.checksums import checksum_problem, file_digest, git_head, is_commit
from mopeft.data.spec import DatasetSpec, Source
from mopeft.io import atomic_dir, write_json

log = logging.getLogger(__name__)

MINIATURE_MARKER = "MINIATURE"  # written by write_miniature(): raw data is synthetic


def verify_sources(spec: DatasetSpec, raw_dir: Path, check: bool = True) -> dict[str, str]:
    """Check every required source is present (and matches its checksum or pinned commit); return
    name -> sha256 (``git <commit>`` for a git clone, ``directory`` for another folder)."""
    found: dict[str, str] = {}
    for src in spec.sources:
        path = raw_dir / src.filename
        if not path.exists():
            if src.required:
                raise PrepareError(f"{path}: missing. {manual_hint(src, raw_dir)}")
            continue
        if path.is_dir():
            head = git_head(path) if src.kind == "git" else None
            found[src.filename] = f"git {head}" if head else "directory"
            if check and head and is_commit(src.git_ref) and head != src.git_ref:
                raise PrepareError(
                    f"{path}: checked out commit {head}, but {src.url} is pinned at {src.git_ref}; "
                    f"run `git -C {path} fetch origin {src.git_ref} && git -C {path} checkout {src.git_ref}`"
                )
            continue
        sha = file_digest(path, "sha256")
        found[src.filename] = sha
        if check and (problem := checksum_problem(path, src, sha)):
            raise PrepareError(problem)
    return found


def manual_hint(src: Source, raw_dir: Path) -> str:
    if src.kind in ("manual", "kaggle"):
        return f"Download it by hand and place it at {raw_dir / src.filename}. {src.instructions}".strip()
    return (
        f"Fetch it with `mopeft download --dataset {raw_dir.name} --out {raw_dir}` "
        f"(source: {src.url or src.gdrive_id})."
    )


def split_roots(root: Path, spec: DatasetSpec) -> list[Path]:
    """Folders holding ``{train,test}/{images,labels}``: the dataset folder, or one per task."""
    return [root / t for t in spec.tasks] if spec.tasks else [root]


def check_histogram(hist: np.ndarray, num_classes: int, where: Path) -> None:
    """:func:`~mopeft.data.images.check_label_values` on a label's histogram (no sort, no second
    look at the pixels)."""
    values = np.flatnonzero(hist)
    if (bad := values[(values >= num_classes) & (values != IGNORE)]).size:
        raise PrepareError(
            f"{where}: label values {bad.tolist()[:10]} outside 0..{num_classes - 1} and {IGNORE}"
        )


def validate_layout(
    root: Path, spec: DatasetSpec, full: bool = True, pixels: dict[str, np.ndarray] | None = None
) -> dict[str, int]:
    """Check pairs, sizes and label values of a prepared folder; return per-split counts. With
    ``pixels``, the label histograms are summed into it per split (the same decode and the same
    histogram as the value check, so counting costs nothing extra)."""
    counts: dict[str, int] = {}
    for sroot in split_roots(root, spec):
        prefix = f"{sroot.name}/" if spec.tasks else ""
        for split in ("train", "test"):
            if not (sroot / split).exists():
                counts[prefix + split] = 0
                continue
            pairs = list_pairs(sroot / split)
            counts[prefix + split] = len(pairs)
            total = np.zeros(256, dtype=np.int64)
            for img, lbl in pairs if full else pairs[:5]:
                with Image.open(img) as a, Image.open(lbl) as b:
                    if a.size != b.size:
                        raise PrepareError(f"{lbl}: size {b.size} differs from image {img.name} {a.size}")
                    if b.mode not in ("L", "P"):
                        raise PrepareError(f"{lbl}: label must be single-channel, got mode {b.mode}")
                    hist = histogram(np.asarray(b))
                check_histogram(hist, spec.num_classes, lbl)
                total += hist
            if pixels is not None:
                pixels[prefix + split] = total
    return counts


def check_counts(spec: DatasetSpec, counts: dict[str, int]) -> None:
    if spec.expected_test is None:  # a folder dataset: no published count to check against
        return
    for n in (v for k, v in counts.items() if k.endswith("test")):
        if n != spec.expected_test:
            msg = f"{spec.key}: {n} test images, MESS expects {spec.expected_test}"
            if spec.expected_test_is_exact:
                raise PrepareError(msg)
            warnings.warn(msg + " (a known mismatch of the public release; docs/datasets.md)", stacklevel=2)


def prepare_dataset(
    key: str, raw_dir: str | Path, out_root: str | Path, options: PrepareOptions | None = None
) -> Path:
    """Prepare ``key`` from ``raw_dir`` into ``out_root/key`` and return that folder."""
    module = dataset_module(key)
    spec: DatasetSpec = module.SPEC
    raw_dir = Path(raw_dir)
    options = options or PrepareOptions()
    miniature = (raw_dir / MINIATURE_MARKER).exists()
    options.miniature = options.miniature or miniature
    sources = verify_sources(spec, raw_dir, check=not options.miniature)
    log.info("preparing %s from %s", key, raw_dir)
    return write_prepared(spec, out_root, lambda tmp: module.prepare(raw_dir, tmp, options), sources, options)


Fill = Callable[[Path], "dict[str, Any] | None"]


def write_prepared(
    spec: DatasetSpec,
    out_root: str | Path,
    fill: Fill,
    sources: dict[str, str],
    options: PrepareOptions,
    synthetic: bool | None = None,
    coverage: CoverageRules | None = None,
) -> Path:
    """The one way a prepared folder comes to be, for registered and folder datasets alike:
    ``fill(tmp)`` writes the layout into a temporary folder (returning meta.json extras), the
    layout is validated (pairs, sizes, label values) and its pixels counted per class and split (a
    folder dataset's class without pixels is refused unless ``coverage`` allows it; a registered
    release's is a warning, a miniature's only recorded), ``meta.json`` is written last and the
    folder is moved onto ``out_root/<key>`` atomically. ``sources``: file -> sha256 of every input
    used."""
    target = Path(out_root) / spec.key
    rules = coverage or CoverageRules(allow=frozenset(spec.allow_missing_classes))
    with atomic_dir(target) as tmp:
        extra: dict[str, Any] = fill(tmp) or {}
        pixels: dict[str, np.ndarray] = {}
        counts = validate_layout(tmp, spec, pixels=pixels)
        if not options.miniature:
            check_counts(spec, counts)
        mode = "record" if options.miniature else "error" if coverage else "warn"
        missing = check_coverage(spec, pixels, counts, rules, mode)
        meta = {
            "dataset": spec.key,
            "name": spec.name,
            "domain": spec.domain,
            "classes": list(spec.classes),
            "num_classes": spec.num_classes,
            "ignore_index": IGNORE,
            "channels": spec.channels,
            "tasks": list(spec.tasks),
            "train_split": spec.train_split,
            "presence_head": spec.presence_head,
            "counts": counts,
            "pixels": pixels_meta(pixels, spec.num_classes),
            "missing_classes": missing,
            "sources": sources,
            "synthetic": bool(options.miniature if synthetic is None else synthetic),
            "tile_size": options.tile_size,
            "mopeft_version": __version__,
            **extra,
        }
        write_json(tmp / "meta.json", meta)
    log.info("prepared %s: %s", spec.key, counts)
    return target
