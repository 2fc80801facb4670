"""Private helpers for the Medical Imaging / Engineering preparers (Kvasir, CHASE, CryoNuSeg,
PAXRay-4, Corrosion CS, DeepCrack, PST900, ZeroWaste-f).

They cover what those eight preparers share but ``mopeft.data.common`` does not offer: a scratch
folder on the output's file system (archives are tens of GB, /tmp may be small), locating folders
inside archives whose top-level name varies between mirrors, copying images without needless
re-encoding, MESS's "divide by 255 and floor" binarisation, and the synthetic blobs/archives the
miniatures are built from.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.common import PrepareError, load_image, save_image

MINIATURE_MARKER = "MINIATURE"
log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------- preparing
@contextlib.contextmanager
def scratch_dir(out_dir: Path, key: str) -> Iterator[Path]:
    """Temporary extraction folder next to ``out_dir`` (same file system), always deleted."""
    with tempfile.TemporaryDirectory(prefix=f".{key}-scratch-", dir=Path(out_dir).parent) as tmp:
        yield Path(tmp)


def find_dir(root: Path, rel: str, archive: Path) -> Path:
    """The unique folder under ``root`` whose path ends with ``rel`` (e.g. ``original/Test``).

    Mirrors and re-zips differ in their top-level folder, so we search instead of hard-coding it;
    more than one match would be ambiguous and is refused.
    """
    parts = Path(rel).parts
    hits = sorted(
        p for p in [root, *root.rglob(parts[-1])] if p.is_dir() and p.parts[-len(parts):] == parts
    )
    if not hits:
        raise PrepareError(f"{archive}: no folder '{rel}' inside")
    if len(hits) > 1:
        raise PrepareError(f"{archive}: folder '{rel}' found {len(hits)} times: {[str(h) for h in hits[:3]]}")
    return hits[0]


def find_file(root: Path, name: str, archive: Path) -> Path:
    """The unique file called ``name`` anywhere under ``root`` (top-level folders vary)."""
    hits = sorted(p for p in root.rglob(name) if p.is_file())
    if len(hits) != 1:
        raise PrepareError(f"{archive}: expected one '{name}' inside, found {len(hits)}")
    return hits[0]


def put_image(src: Path, dst_dir: Path, stem: str) -> tuple[int, int]:
    """Write ``src`` as ``dst_dir/<stem>.{jpg,png}``; return its (height, width).

    8-bit RGB JPEG/PNG files are copied byte for byte (no re-encoding loss, no extra disk I/O);
    anything else (grey, RGBA, TIFF, BMP) is converted to RGB by PIL (as MESS does) and saved as
    PNG. The image is always decoded first, so a truncated file fails here, naming it.
    """
    array = load_image(src)
    dst_dir.mkdir(parents=True, exist_ok=True)
    suffix = src.suffix.lower()
    is_rgb8 = array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    if is_rgb8 and suffix in (".jpg", ".jpeg", ".png"):
        shutil.copyfile(src, dst_dir / f"{stem}{'.png' if suffix == '.png' else '.jpg'}")
    else:
        save_image(dst_dir / f"{stem}.png", load_image(src, "RGB"))  # PIL's RGB conversion, as MESS
    return array.shape[0], array.shape[1]


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


def files_with_suffix(folder: Path, *suffixes: str) -> list[Path]:
    """Files of ``folder`` whose suffix matches case-insensitively (ZeroWaste uses ``.PNG``)."""
    wanted = {s.lower() for s in suffixes}
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted)


# -------------------------------------------------------------------------------------- miniatures
def blob_label(
    rng: np.random.Generator, h: int, w: int, values: Sequence[int], background: int | None = None, n: int = 4
) -> np.ndarray:
    """Ellipse blobs of random ``values`` on ``background`` (default values[0]): spatially
    structured, so a model can learn the miniature; every value appears at least once."""
    bg = values[0] if background is None else background
    label = np.full((h, w), bg, dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    fg = [v for v in values if v != bg] or list(values)
    for i in range(max(n, len(fg))):
        v = fg[i] if i < len(fg) else int(rng.choice(fg))
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.15, 0.85) * w
        ry, rx = rng.uniform(0.08, 0.25) * h, rng.uniform(0.08, 0.25) * w
        label[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = v
    return label


def image_for(rng: np.random.Generator, label: np.ndarray, channels: int = 3) -> np.ndarray:
    """A noisy image whose colour depends on the label id (so the miniature is learnable)."""
    base = np.stack([(label.astype(np.int64) * k * 37 + 40) % 256 for k in (1, 2, 3)][:channels], axis=-1)
    noisy = base + rng.integers(-20, 21, size=base.shape)
    out = np.clip(noisy, 0, 255).astype(np.uint8)
    return out[..., 0] if channels == 1 else out


def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    """Encode an array as PNG/JPEG/TIFF/BMP bytes (``mode="1"`` gives a 1-bit PNG)."""
    im = Image.fromarray(array)
    if mode is not None:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_zip(path: Path, members: Mapping[str, bytes]) -> None:
    """Zip with fixed timestamps, so the same seed gives byte-identical archives (stable sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)


def tar_gz_bytes(members: Mapping[str, bytes]) -> bytes:
    """A .tar.gz in memory, with zero mtimes (tar members and gzip header) for reproducibility."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def mark_miniature(raw_dir: Path) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / MINIATURE_MARKER).touch()
