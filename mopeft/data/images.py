"""Image files of the prepared layout: decoding that names the file, and writing checked labels.

Shared by the preparers (writing), the training/evaluation loader (reading) and the tests, so it
holds nothing else: importing it pulls in PIL and numpy, not the archive machinery of preparation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.errors import PrepareError

IGNORE = 255


def load_image(path: str | Path, mode: str | None = None) -> np.ndarray:
    """Decode an image fully (so truncated files fail here, naming the file)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if mode is not None:
                im = im.convert(mode)
            return np.asarray(im).copy()
    except FileNotFoundError:
        raise PrepareError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PrepareError(f"{path}: cannot decode image ({exc})") from None


def load_label(path: str | Path) -> np.ndarray:
    """Decode a prepared label, refusing any content that is not PNG whatever the suffix says.

    Why the content and not the name: a (greyscale) JPEG renamed ``.png`` decodes fine, but its
    lossy compression has changed the class ids along every edge, so it would be scored silently
    wrong.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            found = im.format
            if found == "PNG":
                im.load()
                return np.asarray(im).copy()
    except FileNotFoundError:
        raise PrepareError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PrepareError(f"{path}: cannot decode image ({exc})") from None
    raise PrepareError(
        f"{path}: not a PNG (its content is {found or 'an unknown format'}); labels must be lossless "
        "single-channel PNGs: re-prepare the dataset with `mopeft prepare`"
    )


def _bad_values(label: np.ndarray, num_classes: int) -> list[int]:
    """Values of ``label`` that are neither a class id ``0..K-1`` nor the ignore value."""
    if label.dtype == np.uint8:  # a histogram, no sort (np.unique sorts every pixel)
        values = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    else:
        values = np.unique(label)
    return [int(v) for v in values if (v >= num_classes or v < 0) and v != IGNORE]


def check_label_files(paths: Sequence[str | Path], num_classes: int, threads: int | None = None) -> None:
    """Check every label of a split before training or evaluation starts: a PNG of class ids.

    Why a pre-pass: a value such as 200 in a K-class dataset otherwise surfaces mid-run as
    ``IndexError: Target 200 is out of bounds`` (on a GPU, a device-side assert) without the file;
    here it fails in seconds, naming the file and the value. A 1024² label takes about 4 ms (decode
    + histogram, one core); Pillow decodes without the GIL, so threads share the work.
    """

    def bad(path: str | Path) -> tuple[Path, list[int]] | None:
        wrong = _bad_values(load_label(path), num_classes)
        return (Path(path), wrong) if wrong else None

    pool = ThreadPoolExecutor(threads or min(8, os.cpu_count() or 1))
    try:
        for found in pool.map(bad, paths):
            if found:
                path, wrong = found
                raise PrepareError(
                    f"{path}: label value(s) {wrong[:10]} outside the class ids 0..{num_classes - 1} "
                    f"and the ignore value {IGNORE}; re-prepare this dataset with `mopeft prepare` "
                    "(or fix its preparer's class mapping)"
                )
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the image header only (the full decode comes later, when it is copied)."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise PrepareError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PrepareError(f"{path}: cannot decode image ({exc})") from None


def files_by_stem(folder: str | Path, suffixes: tuple[str, ...], role: str) -> dict[str, Path]:
    """Stem -> file of the files of ``folder`` whose suffix is in ``suffixes`` (any case), sorted;
    dot-files are skipped. A missing or empty folder, or two files with one stem, is an error
    naming it (a stem is what pairs an image with its mask or prediction)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PrepareError(f"{folder}: {role} folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            also = found[path.stem].name
            raise PrepareError(f"{path}: two {role} files share the stem {path.stem!r} (also {also})")
        found[path.stem] = path
    if not found:
        raise PrepareError(f"{folder}: no {role} files ({', '.join(suffixes)})")
    return found


def save_image(path: str | Path, array: np.ndarray) -> None:
    """Save an HxW or HxWx3 uint8 image; the format follows the suffix (.png or .jpg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise PrepareError(f"{path}: image must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise PrepareError(f"{path}: image must be HxWx3, got shape {arr.shape}")
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(arr).save(path, **kwargs)


def check_label_values(label: np.ndarray, num_classes: int, where: str | Path) -> None:
    values = np.unique(label)
    bad = values[(values >= num_classes) & (values != IGNORE)]
    if bad.size:
        raise PrepareError(
            f"{where}: label values {bad.tolist()[:10]} outside 0..{num_classes - 1} and {IGNORE}"
        )


def save_label(path: str | Path, label: np.ndarray, num_classes: int) -> None:
    """Save an HxW uint8 label PNG after checking its value set."""
    path = Path(path)
    label = np.asarray(label)
    if label.ndim != 2:
        raise PrepareError(f"{path}: label must be HxW, got shape {label.shape}")
    if label.dtype != np.uint8:
        if label.min() < 0 or label.max() > 255:
            raise PrepareError(f"{path}: label values out of uint8 range")
        label = label.astype(np.uint8)
    check_label_values(label, num_classes, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label, mode="L").save(path)
