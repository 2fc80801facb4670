"""Prepare a folder dataset (config ``custom_datasets``, :mod:`mopeft.data.folder_spec`).

The images and masks are checked file by file, then written through
:func:`mopeft.data.prepare.write_prepared`, the path every registered dataset takes: the layout is
validated, ``meta.json`` (with the sha256 of every source file) is written last and the folder is
moved into place atomically. Every refusal names the source file and what to change, because the
person reading it made the folders and can fix them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mopeft.data.common import (
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
from mopeft.data.folder_spec import IGNORE_COLOUR_KEY, spec_from_resolved
from mopeft.data.images import files_by_stem
from mopeft.data.layout import hashed_order
from mopeft.data.prepare import write_prepared
from mopeft.io import sha256_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")  # lossless only
LOSSY_SUFFIXES = (".jpg", ".jpeg")

Pair = tuple[Path, Path]


def _files(folder: Path, suffixes: Sequence[str], role: str) -> dict[str, Path]:
    """Stem -> file of ``folder``'s ``suffixes`` files; a JPEG mask is refused (lossy labels)."""
    if role == "mask" and folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in LOSSY_SUFFIXES and not path.name.startswith("."):
                raise PrepareError(
                    f"{path}: a JPEG mask; JPEG compression changes label values at every edge. "
                    "Save masks as PNG"
                )
    return files_by_stem(folder, tuple(suffixes), role)


def pair_files(images_dir: str | Path, masks_dir: str | Path) -> list[Pair]:
    """(image, mask) pairs matched by stem, sorted; a file without its counterpart is an error."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _files(images_dir, IMAGE_SUFFIXES, "image")
    masks = _files(masks_dir, MASK_SUFFIXES, "mask")
    if lone := sorted(set(images) - set(masks)):
        raise PrepareError(
            f"{images[lone[0]]}: image without a mask (no {masks_dir}/{lone[0]}.png; "
            f"{len(lone)} image(s) unpaired). Add the mask or move the image out of the folder"
        )
    if lone := sorted(set(masks) - set(images)):
        raise PrepareError(
            f"{masks[lone[0]]}: mask without an image (no {images_dir}/{lone[0]}.*; "
            f"{len(lone)} mask(s) unpaired). Add the image or move the mask out of the folder"
        )
    return [(images[s], masks[s]) for s in sorted(images)]


def split_pairs(pairs: Sequence[Pair], test_fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, test): the test images are the first ``round(fraction · n)`` stems in
    :func:`~mopeft.data.layout.hashed_order`, so an image keeps its side when others are added
    and the split does not depend on a random generator's version."""
    if len(pairs) < 2:
        raise PrepareError(f"{pairs[0][0].parent if pairs else '?'}: needs at least two images to split")
    n_test = min(len(pairs) - 1, max(1, round(test_fraction * len(pairs))))
    test = set(hashed_order([p[0].stem for p in pairs], seed)[:n_test])
    return [p for p in pairs if p[0].stem not in test], [p for p in pairs if p[0].stem in test]


def read_mask(path: Path, image_hw: tuple[int, int], image: Path, resolved: Mapping[str, Any]) -> np.ndarray:
    """The mask of ``image`` as uint8 class ids (255 = ignore), refused when its size is not the
    image's or any value (colour) is not one of the classes (or the ignore value)."""
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
    ignore = int(resolved["ignore"])
    values = np.unique(ids)
    bad = values[(values >= len(classes)) & (values != ignore)]
    if bad.size:
        raise PrepareError(
            f"{path}: mask values {bad.tolist()[:10]} are not classes (0..{len(classes) - 1}: "
            f"{', '.join(classes)}) nor the ignore value {ignore}; extend config "
            f"custom_datasets.{resolved['dataset']}.classes or fix the mask"
        )
    return np.where(ids == ignore, IGNORE, ids).astype(np.uint8)


def source_digests(splits: Mapping[str, Sequence[Pair]], named: Mapping[str, str]) -> dict[str, str]:
    """``<split>/images/<file>`` (just ``images/<file>`` for a single folder pair) -> sha256."""
    out: dict[str, str] = {}
    for split, pairs in splits.items():
        prefix = "" if named[split] == "all" else f"{named[split]}/"
        for image, mask in pairs:
            out[f"{prefix}images/{image.name}"] = sha256_file(image)
            out[f"{prefix}masks/{mask.name}"] = sha256_file(mask)
    return dict(sorted(out.items()))


def prepare_folder(resolved: Mapping[str, Any], out_root: str | Path) -> Path:
    """Prepare a resolved entry (:func:`mopeft.data.folder_spec.resolve`) into ``out_root/<key>``."""
    spec = spec_from_resolved(resolved)
    folders = resolved["folders"]
    if "all" in folders:
        split = resolved["split"]
        train, test = split_pairs(
            pair_files(folders["all"]["images"], folders["all"]["masks"]),
            split["test_fraction"],
            split["seed"],
        )
        splits, named = {"train": train, "test": test}, {"train": "all", "test": "all"}
    else:
        splits = {s: pair_files(folders[s]["images"], folders[s]["masks"]) for s in ("train", "test")}
        named = {"train": "train", "test": "test"}

    def fill(tmp: Path) -> dict[str, Any]:
        ensure_layout(tmp)
        for split, pairs in splits.items():
            for image, mask in pairs:
                hw = put_image(image, tmp / split / "images", image.stem)
                label = read_mask(mask, hw, image, resolved)
                save_label(tmp / split / "labels" / f"{image.stem}.png", label, spec.num_classes)
        return {
            "folder_dataset": {
                k: resolved[k] for k in ("folders", "split", "ignore", "palette", "source") if k in resolved
            }
        }

    return write_prepared(
        spec,
        out_root,
        fill,
        source_digests(splits, named),
        PrepareOptions(),
        synthetic=resolved.get("source") is not None,
    )
