"""Helpers shared by the dataset preparers.

Preparers write the uniform layout ``{train,test}/{images,labels}``: images as 8-bit RGB PNG (or
JPEG where the source is JPEG), labels as single-channel uint8 PNG with class ids 0..K-1 and 255 =
ignore, matched by file stem. Every label goes through :func:`save_label`, which refuses values
outside {0..K-1, 255}, so no unknown value can leak into training or scoring.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mopeft.data.errors import PrepareError

# Re-exported: the dataset modules take every helper from here.
from mopeft.data.images import IGNORE as IGNORE
from mopeft.data.images import check_label_values as check_label_values
from mopeft.data.images import image_size as image_size
from mopeft.data.images import load_image as load_image
from mopeft.data.images import save_image as save_image
from mopeft.data.images import save_label as save_label
from mopeft.data.prepared.layout import kfold_assignment as kfold_assignment
from mopeft.data.sources.archive import ExtractLimits, extract_tar, extract_zip
from mopeft.data.sources.rar import extract_rar, is_rar

MESS_TILE = 1024

# The 19 Cityscapes evaluation classes in train-id order (BDD100K uses them as is; Dark Zurich in
# MESS prepends "unlabeled").
CITYSCAPES_CLASSES = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)
COPYABLE_SUFFIXES = (".jpg", ".jpeg", ".png")  # formats copied byte for byte when already 8-bit RGB

log = logging.getLogger(__name__)


TEST_IMAGE_MODES = ("bytes", "mess")  # PrepareOptions.test_images; see mess_resave


@dataclass
class PrepareOptions:
    tile_size: int = MESS_TILE  # MESS tiles large images to 1024x1024
    miniature: bool = False  # raw input is a generated miniature: skip count assertions
    extra: dict = field(default_factory=dict)
    # "bytes": 8-bit RGB test images are copied byte for byte (no generation loss); "mess": encoded
    # exactly as MESS's prepare scripts do (CHASE DB1, ATLANTIS re-save as JPEG quality 75;
    # FoodSeg103 raw even when not RGB), for bit-identical inputs when comparing against MESS.
    test_images: str = "bytes"

    def __post_init__(self) -> None:
        if self.test_images not in TEST_IMAGE_MODES:
            raise PrepareError(f"test_images must be one of {TEST_IMAGE_MODES}, not {self.test_images!r}")


# ---------------------------------------------------------------------------------------------- I/O
def is_rgb8(image: np.ndarray) -> bool:
    return image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def copy_or_convert(src: str | Path, image: np.ndarray, dst: str | Path) -> None:
    """Write the decoded source image ``image`` of ``src`` to ``dst``.

    An 8-bit RGB source is copied byte for byte (no re-encoding loss, no extra CPU); anything else
    (grey, RGBA, 16-bit) goes through PIL's RGB conversion, as MESS does, in the format of ``dst``'s
    suffix. The caller decodes first (it needs the size for its checks), so a truncated file has
    already failed, naming it.
    """
    dst = Path(dst)
    if is_rgb8(image):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    else:
        save_image(dst, load_image(src, "RGB"))


def mess_resave(src: str | Path, dst: str | Path) -> None:
    """MESS's ``Image.open(src).convert('RGB').save(dst)``: the format comes from ``dst``'s suffix
    with PIL's defaults (JPEG: quality 75, 4:2:0), which is lossy for a JPEG source; used only when
    :attr:`PrepareOptions.test_images` asks for MESS's exact bytes. Results match MESS's when both
    use the same Pillow/libjpeg version."""
    from PIL import Image

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        with Image.open(src) as img:
            img.convert("RGB").save(dst)
    except (OSError, SyntaxError, ValueError) as exc:
        raise PrepareError(f"{src}: cannot re-encode image ({exc})") from None


def put_image(
    src: Path, dst_dir: Path, stem: str, copy_suffixes: Sequence[str] = COPYABLE_SUFFIXES
) -> tuple[int, int]:
    """Write ``src`` as ``dst_dir/<stem>.{jpg,png}``; return its (height, width).

    8-bit RGB files whose suffix is in ``copy_suffixes`` are copied byte for byte (as ``.png`` or
    ``.jpg``); anything else (grey, RGBA, TIFF, BMP) is converted to RGB by PIL and saved as PNG.
    Unlike :func:`copy_or_convert`, the output suffix follows the source, so callers need not know
    the format in advance.
    """
    array = load_image(src)
    dst_dir.mkdir(parents=True, exist_ok=True)
    suffix = src.suffix.lower()
    if is_rgb8(array) and suffix in copy_suffixes:
        copy_or_convert(src, array, dst_dir / f"{stem}{'.png' if suffix == '.png' else '.jpg'}")
    else:
        save_image(dst_dir / f"{stem}.png", load_image(src, "RGB"))  # PIL's RGB conversion, as MESS
    return array.shape[0], array.shape[1]


def ensure_layout(out_dir: Path, splits: Sequence[str] = ("train", "test")) -> None:
    """Create ``<split>/{images,labels}`` up front, so a split with no images (k-fold datasets have
    no labelled train split) still has the layout the validator expects."""
    for split in splits:
        for sub in ("images", "labels"):
            (out_dir / split / sub).mkdir(parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------ mask decoding
def floor_div_255(mask: np.ndarray, where: Path) -> np.ndarray:
    """MESS's ``np.uint8(mask / 255)`` for a 0/255 mask: only 255 becomes 1, anything lower 0."""
    if mask.dtype == bool:
        return mask.astype(np.uint8)
    if mask.dtype != np.uint8:
        raise PrepareError(f"{where}: expected an 8-bit mask, got {mask.dtype}")
    return (mask == 255).astype(np.uint8)


def single_channel(mask: np.ndarray, where: Path) -> np.ndarray:
    """An id mask saved as RGB with equal channels is accepted; genuinely colour masks are not."""
    if mask.ndim == 2:
        return mask
    if mask.ndim == 3 and (mask[..., :3] == mask[..., :1]).all():
        return mask[..., 0]
    raise PrepareError(f"{where}: expected a single-channel id mask, got shape {mask.shape}")


def check_same_size(label: np.ndarray, hw: tuple[int, int], where: Path) -> None:
    if label.shape[:2] != hw:
        raise PrepareError(f"{where}: mask size {label.shape[:2]} differs from its image {hw}")


# ------------------------------------------------------------------------------------ label mapping
def map_ids(label: np.ndarray, lut: Mapping[int, int], default: int = IGNORE) -> np.ndarray:
    """Map integer ids through ``lut``; ids not in it become ``default`` (255 = ignore).

    The table is uint8 (every output is a uint8 label), so the result is built in one byte per
    pixel rather than through an int64 copy of the image.
    """
    label = np.asarray(label)
    table = np.full(max(int(label.max(initial=0)), max(lut, default=0)) + 1, default, dtype=np.uint8)
    for src, dst in lut.items():
        table[src] = dst
    return table[label]


MAP_CHUNK_PIXELS = 1 << 18  # map_colours works on row blocks of about this many pixels


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

    Source masks reach 20000² pixels (iSAID), so the colours are packed into uint32 codes one block
    of rows at a time: besides the uint8 result, memory stays at a few MB whatever the image size.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise PrepareError(f"{where}: colour label must be HxWx3, got shape {rgb.shape}")
    if not colour_to_id:
        raise ValueError("map_colours needs at least one colour")
    codes = np.array([(r << 16) | (g << 8) | b for r, g, b in colour_to_id], dtype=np.uint32)
    order = np.argsort(codes)
    codes = codes[order]
    ids = np.array(list(colour_to_id.values()), dtype=np.uint8)[order]
    out = np.full(rgb.shape[:2], IGNORE, dtype=np.uint8)
    rows = max(1, MAP_CHUNK_PIXELS // max(1, rgb.shape[1]))
    for y in range(0, rgb.shape[0], rows):
        block = rgb[y : y + rows]
        code = block[..., 0].astype(np.uint32) << 16
        code |= block[..., 1].astype(np.uint32) << 8
        code |= block[..., 2]
        pos = np.searchsorted(codes, code).clip(max=len(codes) - 1)
        known = codes[pos] == code
        if unknown == "error" and not known.all():
            bad = np.unique(code[~known])[:5]
            colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in bad.tolist()]
            raise PrepareError(f"{where}: unknown label colour(s) {colours}")
        out[y : y + rows][known] = ids[pos[known]]
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


def extract(
    archive: str | Path, dest: str | Path, password: str | None = None, limits: ExtractLimits | None = None
) -> Path:
    """Extract a zip, tar(.gz|.bz2|.xz) or RAR archive below ``dest``, refusing any member that
    could land outside it (see :mod:`mopeft.data.sources.archive`; RAR via :mod:`mopeft.data.sources.rar`) and
    any archive that would write more than ``limits`` (default: :meth:`ExtractLimits.from_env`)."""
    archive, dest = Path(archive), Path(dest)
    require(archive)
    limits = limits or ExtractLimits.from_env()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if zipfile.is_zipfile(archive):
            extract_zip(archive, dest, password, limits)
        elif tarfile.is_tarfile(archive):
            extract_tar(archive, dest, limits)
        elif is_rar(archive):
            extract_rar(archive, dest, limits=limits)
        else:
            raise PrepareError(f"{archive}: not a zip, tar or RAR archive (truncated or wrong file?)")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise PrepareError(f"{archive}: cannot extract ({exc})") from None
    return dest


# --------------------------------------------------------------------------------------- raw layouts
@contextlib.contextmanager
def scratch_dir(out_dir: Path, key: str) -> Iterator[Path]:
    """Temporary extraction folder next to ``out_dir`` (same file system: archives are tens of GB
    and /tmp may be small), always deleted. Its name starts with a dot, like the preparer's own
    temporary output, so leftovers are easy to spot."""
    with tempfile.TemporaryDirectory(prefix=f".{key}-scratch-", dir=Path(out_dir).parent) as tmp:
        yield Path(tmp)


def is_hidden(path: Path, root: Path) -> bool:
    """True for what macOS and file managers add below ``root``: ``__MACOSX/`` copies of every
    zipped folder, AppleDouble ``._<name>`` files, ``.DS_Store`` and other dot-files or folders.
    They are never data, and their copies of real folder names would make every lookup ambiguous."""
    return any(part == "__MACOSX" or part.startswith(".") for part in path.relative_to(root).parts)


def visible(root: Path, pattern: str) -> list[Path]:
    """Sorted ``root.glob(pattern)`` (``**/`` for recursion) without hidden entries (:func:`is_hidden`).

    Every preparer looks files and folders up through this (or the helpers below) rather than with
    ``glob`` / ``rglob`` directly: pathlib's ``*`` matches dot-files, so ``*.png`` finds ``._a.png``.
    """
    return sorted(p for p in root.glob(pattern) if not is_hidden(p, root))


def find_dir(root: Path, rel: str, archive: Path) -> Path:
    """The unique folder under ``root`` whose path ends with ``rel`` (e.g. ``original/Test``).

    Mirrors and re-zips differ in their top-level folder, so we search instead of hard-coding it;
    more than one match would be ambiguous and is refused (hidden copies do not count).
    """
    parts = Path(rel).parts
    found = [root, *visible(root, f"**/{parts[-1]}")]
    hits = sorted(p for p in found if p.is_dir() and p.parts[-len(parts) :] == parts)
    if not hits:
        raise PrepareError(f"{archive}: no folder '{rel}' inside")
    if len(hits) > 1:
        raise PrepareError(f"{archive}: folder '{rel}' found {len(hits)} times: {[str(h) for h in hits[:3]]}")
    return hits[0]


def find_file(root: Path, name: str, archive: Path) -> Path:
    """The unique file called ``name`` anywhere under ``root`` (top-level folders vary)."""
    hits = [p for p in visible(root, f"**/{name}") if p.is_file()]
    if len(hits) != 1:
        raise PrepareError(f"{archive}: expected one '{name}' inside, found {len(hits)}")
    return hits[0]


def files_with_suffix(folder: Path, *suffixes: str) -> list[Path]:
    """Visible files of ``folder`` whose suffix matches case-insensitively (ZeroWaste uses ``.PNG``)."""
    wanted = {s.lower() for s in suffixes}
    return [p for p in visible(folder, "*") if p.is_file() and p.suffix.lower() in wanted]


def pair_by_stem(images: Sequence[Path], masks: Sequence[Path], where: Path) -> list[tuple[Path, Path]]:
    """Match images and masks by file stem.

    When the stems differ but the counts agree, fall back to pairing the sorted lists, which is
    what MESS's ``load_sem_seg`` does (it zips sorted file lists); a warning says so, and the
    callers' size check still catches a misaligned pair. Differing counts mean a broken download.
    """
    by_img = {p.stem: p for p in images}
    by_mask = {p.stem: p for p in masks}
    if set(by_img) == set(by_mask):
        return [(by_img[s], by_mask[s]) for s in sorted(by_img)]
    if len(by_img) == len(by_mask) and by_img:
        log.warning("%s: image and mask names differ; pairing sorted lists as MESS does", where)
        by_name = sorted(images, key=lambda p: p.stem), sorted(masks, key=lambda p: p.stem)
        return list(zip(*by_name, strict=True))
    only_i = sorted(set(by_img) - set(by_mask))[:3]
    only_m = sorted(set(by_mask) - set(by_img))[:3]
    raise PrepareError(f"{where}: images without masks {only_i}, masks without images {only_m}")
