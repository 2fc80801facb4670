"""Building blocks for the datasets' ``write_miniature()``: tiny synthetic raw downloads.

Every preparer is tested on a miniature written in the original raw layout (same archive names,
folders and encodings), so the real preparation code runs end to end without the real data. The
miniatures need the same few tools: encode an array as the bytes of an image file, lay out labels a
model can learn (piecewise-constant blocks or ellipse blobs, plus a noisy image that follows them),
pack members into zip / tar.gz archives and mark the raw folder as synthetic. They live here once so
that a property such as archive determinism (the sha256 of each raw file ends up in ``meta.json``)
holds for every dataset, not just for those whose author remembered it.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mopeft.data.prepared.write import MINIATURE_MARKER

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest DOS timestamp: members carry no wall-clock time


# ------------------------------------------------------------------------------------------ labels
def expand_blocks(grid: np.ndarray, block: int, h: int, w: int) -> np.ndarray:
    """Blow each grid cell up to ``block``² pixels and crop to ``h`` x ``w`` (piecewise-constant)."""
    return np.kron(grid, np.ones((block, block), dtype=np.int64))[:h, :w]


def random_block_ids(rng: np.random.Generator, h: int, w: int, n: int, block: int = 8) -> np.ndarray:
    """``h`` x ``w`` int64 ids in ``0..n-1``, constant over ``block``² cells (indexes a palette)."""
    return expand_blocks(rng.integers(0, n, size=(-(-h // block), -(-w // block))), block, h, w)


def random_block_label(
    rng: np.random.Generator, h: int, w: int, values: Sequence[int], block: int = 16
) -> np.ndarray:
    """``h`` x ``w`` uint8 label drawn from ``values`` (raw ids, possibly unmapped ones) in
    ``block``² cells, so a model can actually learn the miniature."""
    grid = rng.choice(values, size=(-(-h // block), -(-w // block)))
    return expand_blocks(grid, block, h, w).astype(np.uint8)


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


# ------------------------------------------------------------------------------------------ images
def encode(
    array: np.ndarray,
    fmt: str,
    mode: str | None = None,
    *,
    palette: Sequence[int] | None = None,
    **save_options,
) -> bytes:
    """The bytes of ``array`` saved as ``fmt`` (PNG, JPEG, TIFF, BMP).

    ``mode="1"`` converts to a 1-bit image first; ``palette`` stores a 2-D array as a palette ("P")
    PNG whose indices are the array values; ``save_options`` (e.g. ``quality``) go to PIL's save.
    """
    im = Image.fromarray(array, mode="P" if palette else None)
    if palette:
        im.putpalette(palette)
    if mode is not None:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt, **save_options)
    return buf.getvalue()


def write_files(root: Path, files: Mapping[str, bytes]) -> None:
    """Write ``files`` (relative path -> bytes) under ``root``, for raw layouts that are folders
    (git clones, unpacked releases) rather than archives."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# ---------------------------------------------------------------------------------------- archives
def zip_bytes(members: Mapping[str, bytes]) -> bytes:
    """A deflated zip with fixed timestamps, so the same seed gives byte-identical archives (stable
    sha256 in ``meta.json``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def write_zip(path: Path, members: Mapping[str, bytes]) -> None:
    """:func:`zip_bytes` written to ``path`` (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zip_bytes(members))


def tar_gz_bytes(members: Mapping[str, bytes]) -> bytes:
    """A .tar.gz in memory, with zero mtimes (tar members and gzip header) for reproducibility."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar_gz(path: Path, members: Mapping[str, bytes]) -> None:
    """:func:`tar_gz_bytes` written to ``path`` (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_gz_bytes(members))


def read_zip(path: Path, password: bytes | None = None) -> dict[str, bytes]:
    """All members of a zip, in archive order (to derive a variant of a miniature)."""
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name, pwd=password) for name in zf.namelist()}


def replace_members(path: Path, replace: Mapping[str, bytes | None]) -> None:
    """Rewrite the zip at ``path`` with some members replaced (bytes) or dropped (``None``): how
    tests plant a corrupt, missing or mis-encoded file in an otherwise valid miniature. A name not
    in the archive raises KeyError, so a mistyped name cannot quietly add a member instead."""
    members = read_zip(path)
    for name, data in replace.items():
        if name not in members:
            raise KeyError(f"{path}: no member {name!r} to replace")
        if data is None:
            del members[name]
        else:
            members[name] = data
    write_zip(path, members)


# What macOS adds to an archive or a copied folder: an AppleDouble file per data file (resource
# fork and extended attributes; magic 0x00051607) and a Finder .DS_Store per folder. Never data.
APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(10)
DS_STORE = b"\x00\x00\x00\x01Bud1" + bytes(24)


def macos_junk(members: Mapping[str, bytes], inline: bool = False) -> dict[str, bytes]:
    """``members`` plus what macOS adds when it packs them: Archive Utility's zip puts an
    AppleDouble ``._<name>`` for every file under a ``__MACOSX/`` copy of the folder tree; its tar
    (``inline=True``) puts it next to the file. Both add a ``.DS_Store`` per folder. The preparers
    must ignore all of it, however many folders it duplicates."""
    out = dict(members)
    folders: set[str] = set()
    for name in members:
        parent, _, base = name.rpartition("/")
        prefix = f"{parent}/" if parent else ""
        out[f"{prefix}._{base}" if inline else f"__MACOSX/{prefix}._{base}"] = APPLE_DOUBLE
        parts = parent.split("/") if parent else []
        folders.update("/".join(parts[:i]) for i in range(len(parts) + 1))
    for folder in sorted(folders):
        out[f"{folder}/.DS_Store" if folder else ".DS_Store"] = DS_STORE
    return out


def mark_miniature(raw_dir: Path) -> None:
    """Mark ``raw_dir`` as synthetic: preparation then skips checksum and count assertions."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / MINIATURE_MARKER).touch()
