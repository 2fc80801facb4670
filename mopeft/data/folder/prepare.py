"""Prepare a folder dataset (config ``custom_datasets``, :mod:`mopeft.data.folder.spec`).

The images and masks are checked file by file, then written through
:func:`mopeft.data.prepared.write.write_prepared`, the path every registered dataset takes: the layout is
validated, ``meta.json`` (with the sha256 of every source file) is written last and the folder is
moved into place atomically. Every refusal names the source file and what to change, because the
person reading it made the folders and can fix them; and every problem of the folders is reported
in one error (:class:`~mopeft.data.prepared.problems.Problems`), so one run shows all there is to fix.

A class that no mask labels (in a split) is refused too, with its likely cause worked out from the
raw mask values (:mod:`mopeft.data.folder.coverage`): most often 0/255 masks whose 255 is the
default ``ignore`` value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mopeft.data.datasets.common import (
    IGNORE,
    PrepareError,
    PrepareOptions,
    ensure_layout,
    load_image,
    map_colours,
    put_image,
    save_label,
    single_channel,
)
from mopeft.data.folder.coverage import MaskStats, coverage_rules
from mopeft.data.folder.spec import IGNORE_COLOUR_KEY, IGNORE_VALUE_KEY, spec_from_resolved
from mopeft.data.images import files_by_stem
from mopeft.data.prepared.layout import hashed_order
from mopeft.data.prepared.problems import Problems
from mopeft.data.prepared.write import write_prepared
from mopeft.io import sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")  # lossless only
LOSSY_SUFFIXES = (".jpg", ".jpeg")

Pair = tuple[Path, Path]


def _jpeg_masks(folder: Path, problems: Problems) -> set[str]:
    """Stems of JPEG masks in ``folder``, each one a problem (lossy labels)."""
    stems: set[str] = set()
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in LOSSY_SUFFIXES and not path.name.startswith("."):
                problems.add(
                    f"{path}: a JPEG mask; JPEG compression changes label values at every edge. "
                    "Save masks as PNG"
                )
                stems.add(path.stem)
    return stems


def _files(folder: Path, suffixes: Sequence[str], role: str, problems: Problems) -> dict[str, Path]:
    """Stem -> file of ``folder``'s ``suffixes`` files; a missing or empty folder or a shared stem
    is a problem (and gives no files)."""
    with problems.collect():
        return files_by_stem(folder, tuple(suffixes), role)
    return {}


def pair_files(images_dir: str | Path, masks_dir: str | Path, problems: Problems | None = None) -> list[Pair]:
    """(image, mask) pairs matched by stem, sorted. A file without its counterpart is a problem,
    added to ``problems`` (the pairs found are still returned); without ``problems`` they are
    raised at once."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    found = problems if problems is not None else Problems(f"{images_dir} + {masks_dir}")
    jpeg = _jpeg_masks(masks_dir, found)
    images = _files(images_dir, IMAGE_SUFFIXES, "image", found)
    masks = _files(masks_dir, MASK_SUFFIXES, "mask", found)
    if images and masks:  # else the missing folder is the problem, not each file of the other
        for stem in sorted(set(images) - set(masks) - jpeg):
            found.add(
                f"{images[stem]}: image without a mask (no {masks_dir}/{stem}.png). "
                "Add the mask or move the image out of the folder"
            )
        for stem in sorted(set(masks) - set(images)):
            found.add(
                f"{masks[stem]}: mask without an image (no {images_dir}/{stem}.*). "
                "Add the image or move the mask out of the folder"
            )
    if problems is None:
        found.raise_if_any()
    return [(images[s], masks[s]) for s in sorted(set(images) & set(masks))]


def split_pairs(pairs: Sequence[Pair], test_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, test): the test images are the first ``round(fraction · n)`` stems in
    :func:`~mopeft.data.prepared.layout.hashed_order`, so an image keeps its side when others are added
    and the split does not depend on a random generator's version."""
    if len(pairs) < 2:
        raise PrepareError(f"{pairs[0][0].parent if pairs else '?'}: needs at least two images to split")
    n_test = min(len(pairs) - 1, max(1, round(test_fraction * len(pairs))))
    test = set(hashed_order([p[0].stem for p in pairs], seed)[:n_test])
    return [p for p in pairs if p[0].stem not in test], [p for p in pairs if p[0].stem in test]


def _value_table(resolved: Mapping[str, Any]) -> np.ndarray | None:
    """Mask value -> class id (255: ignore, -1: not listed) from ``values``; None without it."""
    values = resolved.get("values")
    if not values:
        return None
    table = np.full(256, -1, dtype=np.int16)
    for i, name in enumerate(resolved["classes"]):
        table[values[name]] = i
    if IGNORE_VALUE_KEY in values:
        table[values[IGNORE_VALUE_KEY]] = IGNORE
    return table


def _map_ids(ids: np.ndarray, path: Path, resolved: Mapping[str, Any]) -> np.ndarray:
    """Single-channel mask values -> class ids: through ``values``, else value i is class i (and
    ``ignore`` is 255); a value that is neither is refused, naming the config key to extend."""
    classes, key = resolved["classes"], resolved["dataset"]
    present = np.flatnonzero(np.bincount(ids.ravel())) if ids.size else np.zeros(0, dtype=np.int64)
    table = _value_table(resolved)
    if table is not None:
        bad = [int(v) for v in present if v > 255 or table[v] < 0]
        if bad:
            raise PrepareError(
                f"{path}: mask values {bad[:10]} are not in config custom_datasets.{key}.values "
                f"({dict(resolved['values'])}); add them or fix the mask"
            )
        return table[ids].astype(np.uint8)
    ignore = resolved["ignore"]
    bad = [int(v) for v in present if v >= len(classes) and v != ignore]
    if bad:
        raise PrepareError(
            f"{path}: mask values {bad[:10]} are not classes (0..{len(classes) - 1}: "
            f"{', '.join(classes)}) nor the ignore value {ignore}; extend config "
            f"custom_datasets.{key}.classes or fix the mask"
        )
    return np.where(ids == ignore, IGNORE, ids).astype(np.uint8)


def read_mask(
    path: Path,
    image_hw: tuple[int, int],
    image: Path,
    resolved: Mapping[str, Any],
    raw_values: np.ndarray | None = None,
) -> np.ndarray:
    """The mask of ``image`` as uint8 class ids (255 = ignore), refused when its size is not the
    image's or any value (colour) is not one of the classes (or the ignore value). With
    ``raw_values`` (256 bins), the histogram of a single-channel mask's values is added to it."""
    classes = resolved["classes"]
    palette = resolved.get("palette")
    raw = load_image(path, "RGB" if palette else None)
    if raw.shape[:2] != tuple(image_hw):
        raise PrepareError(
            f"{path}: mask size {raw.shape[1]}x{raw.shape[0]} differs from its image {image} "
            f"{image_hw[1]}x{image_hw[0]}; masks must be pixel-aligned with their images"
        )
    if palette:
        colours = {tuple(palette[c]): i for i, c in enumerate(classes)}
        if IGNORE_COLOUR_KEY in palette:
            colours[tuple(palette[IGNORE_COLOUR_KEY])] = IGNORE
        try:
            return map_colours(raw, colours, path, unknown="error")
        except PrepareError as exc:
            raise PrepareError(
                f"{exc}, not listed in the palette (config custom_datasets.{resolved['dataset']}.palette: "
                f"{dict(palette)}); add the colour or fix the mask"
            ) from None
    ids = single_channel(raw, path).astype(np.int64)
    label = _map_ids(ids, path, resolved)
    if raw_values is not None:
        raw_values += np.bincount(ids.ravel(), minlength=256)[:256]
    return label


def source_digests(splits: Mapping[str, Sequence[Pair]], named: Mapping[str, str]) -> dict[str, str]:
    """``<split>/images/<file>`` (just ``images/<file>`` for a single folder pair) -> sha256."""
    out: dict[str, str] = {}
    for split, pairs in splits.items():
        prefix = "" if named[split] == "all" else f"{named[split]}/"
        for image, mask in pairs:
            out[f"{prefix}images/{image.name}"] = sha256_file(image)
            out[f"{prefix}masks/{mask.name}"] = sha256_file(mask)
    return dict(sorted(out.items()))


def _splits(resolved: Mapping[str, Any], problems: Problems) -> tuple[dict[str, list[Pair]], dict[str, str]]:
    """(split -> pairs, split -> the folder pair it came from: "all", "train" or "test")."""
    folders = resolved["folders"]
    if "all" not in folders:
        splits = {
            s: pair_files(folders[s]["images"], folders[s]["masks"], problems) for s in ("train", "test")
        }
        return splits, {"train": "train", "test": "test"}
    pairs = pair_files(folders["all"]["images"], folders["all"]["masks"], problems)
    if len(pairs) < 2:
        if not problems:  # else those problems are why (an empty or unreadable folder)
            problems.add(f"{folders['all']['images']}: needs at least two image/mask pairs to split")
        problems.raise_if_any()
    split = resolved["split"]
    train, test = split_pairs(pairs, split["test_fraction"], split["seed"])
    return {"train": train, "test": test}, {"train": "all", "test": "all"}


def prepare_folder(resolved: Mapping[str, Any], out_root: str | Path) -> Path:
    """Prepare a resolved entry (:func:`mopeft.data.folder.spec.resolve`) into ``out_root/<key>``."""
    spec = spec_from_resolved(resolved)
    problems = Problems(f"config custom_datasets.{resolved['dataset']}")
    splits, named = _splits(resolved, problems)
    stats = MaskStats(spec.num_classes)

    def fill(tmp: Path) -> dict[str, Any]:
        ensure_layout(tmp)
        for split, pairs in splits.items():
            for image, mask in pairs:
                with problems.collect():
                    hw = put_image(image, tmp / split / "images", image.stem)
                    label = read_mask(mask, hw, image, resolved, stats.raw(split))
                    save_label(tmp / split / "labels" / f"{image.stem}.png", label, spec.num_classes)
                    stats.add(split, label)
        problems.raise_if_any()
        keys = ("folders", "split", "ignore", "palette", "values", "allow_missing_classes", "source")
        return {"folder_dataset": {k: resolved[k] for k in keys if k in resolved}}

    return write_prepared(
        spec,
        out_root,
        fill,
        source_digests(splits, named),
        PrepareOptions(),
        synthetic=resolved.get("source") is not None,
        coverage=coverage_rules(resolved, stats),
    )
