"""Image files of the prepared layout: decoding that names the file, and writing checked labels.

Shared by the preparers (writing), the training/evaluation loader (reading) and the tests, so it
holds nothing else: importing it pulls in PIL and numpy, not the archive machinery of preparation.
"""

from __future__ import annotations

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
