"""Helpers shared by the dataset preparers.

Preparers write the uniform layout ``{train,test}/{images,labels}``: images as 8-bit RGB PNG (or
JPEG where the source is JPEG), labels as single-channel uint8 PNG with class ids 0..K-1 and 255 =
ignore, matched by file stem. Every label goes through :func:`save_label`, which refuses values
outside {0..K-1, 255}, so no unknown value can leak into training or scoring.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE = 255
MESS_TILE = 1024


class PrepareError(ValueError):
    """Bad or missing raw input; the message names the file."""


@dataclass
class PrepareOptions:
    tile_size: int = MESS_TILE  # MESS tiles large images to 1024x1024
    kfold: int = 2  # datasets without a labelled train split: k folds over the test set
    seed: int = 0
    miniature: bool = False  # raw input is a generated miniature: skip count assertions
    extra: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- I/O
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


# ------------------------------------------------------------------------------------ label mapping
def map_ids(label: np.ndarray, lut: Mapping[int, int], default: int = IGNORE) -> np.ndarray:
    """Map integer ids through ``lut``; ids not in it become ``default`` (255 = ignore)."""
    label = np.asarray(label)
    table = np.full(max(int(label.max(initial=0)), max(lut, default=0)) + 1, default, dtype=np.int64)
    for src, dst in lut.items():
        table[src] = dst
    return table[label].astype(np.uint8)


def map_colours(
    rgb: np.ndarray,
    colour_to_id: Mapping[tuple[int, int, int], int],
    where: str | Path,
    unknown: str = "error",
) -> np.ndarray:
    """Map an HxWx3 colour-coded label to ids.

    ``unknown="error"`` raises naming the file and the first unknown colours (a corrupt or
    mis-encoded label must not be trained on); ``unknown="ignore"`` maps them to 255, for datasets
    whose masks are known to carry stray colours (anti-aliasing, compression).
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise PrepareError(f"{where}: colour label must be HxWx3, got shape {rgb.shape}")
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    out = np.full(code.shape, IGNORE, dtype=np.uint8)
    known = np.zeros(code.shape, dtype=bool)
    for (r, g, b), cls in colour_to_id.items():
        m = code == ((r << 16) | (g << 8) | b)
        out[m] = cls
        known |= m
    if unknown == "error" and not known.all():
        bad = np.unique(code[~known])[:5]
        colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in bad.tolist()]
        raise PrepareError(f"{where}: unknown label colour(s) {colours}")
    return out


# -------------------------------------------------------------------------------------------- tiling
def tile(
    image: np.ndarray, label: np.ndarray | None, size: int = MESS_TILE
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """MESS tiling: non-overlapping ``size``² windows, row-major, index i; edges padded (image 0,
    label 255). Yields (i, image_tile, label_tile)."""
    h, w = image.shape[:2]
    n_rows, n_cols = -(-h // size), -(-w // size)
    i = 0
    for r in range(n_rows):
        for c in range(n_cols):
            y0, x0 = r * size, c * size
            img = np.zeros((size, size, *image.shape[2:]), dtype=image.dtype)
            crop = image[y0 : y0 + size, x0 : x0 + size]
            img[: crop.shape[0], : crop.shape[1]] = crop
            lbl = None
            if label is not None:
                lbl = np.full((size, size), IGNORE, dtype=np.uint8)
                lcrop = label[y0 : y0 + size, x0 : x0 + size]
                lbl[: lcrop.shape[0], : lcrop.shape[1]] = lcrop
            yield i, img, lbl
            i += 1


def num_tiles(height: int, width: int, size: int = MESS_TILE) -> int:
    return -(-height // size) * -(-width // size)


# ------------------------------------------------------------------------------------------ archives
def require(path: Path, hint: str = "") -> Path:
    if not path.exists():
        raise PrepareError(f"{path}: missing{'; ' + hint if hint else ''}")
    return path


def extract(archive: str | Path, dest: str | Path, password: str | None = None) -> Path:
    """Extract a zip / tar(.gz|.bz2|.xz) archive, refusing members that escape ``dest``."""
    archive, dest = Path(archive), Path(dest)
    require(archive)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    if not (root / name).resolve().is_relative_to(root):
                        raise PrepareError(f"{archive}: member {name!r} escapes the extraction folder")
                zf.extractall(dest, pwd=password.encode() if password else None)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
        else:
            raise PrepareError(f"{archive}: not a zip or tar archive (truncated or wrong file?)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise PrepareError(f"{archive}: cannot extract ({exc})") from None
    return dest


def kfold_assignment(stems: list[str], k: int) -> dict[str, int]:
    """Deterministic fold of each test image: sorted stems dealt round-robin into k folds."""
    if k < 2:
        raise ValueError("kfold needs k >= 2")
    return {s: i % k for i, s in enumerate(sorted(stems))}
