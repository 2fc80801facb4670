"""Atomic file output.

Snakemake trusts any output file that exists, so a half-written file left by a killed job would be
silently reused. Every artifact is therefore written to a temporary sibling and renamed into place
(rename is atomic on POSIX within one file system).

The temporaries are created with the modes a plain ``open``/``mkdir`` would give (0666/0777 minus
the umask), not ``tempfile``'s private 0600/0700: on a shared cluster, colleagues read the
prepared data, checkpoints and tables, and the umask is how the user says who may.

A full disk (or quota) while writing is reported as :class:`DiskFull`, naming the destination: the
raw errors say neither (``[Errno 28]`` from ``f.write``; ``basic_ios::clear: iostream error`` from
``torch.save``). PyTorch files go through :mod:`mopeft.torch_files` (kept apart so that what the
DAG reads at start-up stays torch-free).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mopeft.errors import InputError, MissingInput, UserError


class DiskFull(UserError, OSError, ValueError):
    """No space (or quota) left while writing ``path``; a ``UserError``, so that the CLI prints it
    as one line instead of a traceback; a ``ValueError`` too, for callers that catch it; and an
    ``OSError`` with ``errno`` set for callers that test it (``errno``: ENOSPC or EDQUOT,
    ``filename``: the destination)."""

    def __str__(self) -> str:  # the message alone, not OSError's "[Errno 28] None: <filename>"
        return str(self.args[0]) if self.args else super().__str__()

    @classmethod
    def at(cls, path: Path, what: str, code: int = errno.ENOSPC) -> DiskFull:
        """The one message every writer gives: ``<path>: <what>; nothing was replaced: ...``."""
        full = cls(
            f"{path}: {what}; nothing was replaced: free space there (or move the outputs to a larger "
            "file system) and rerun"
        )
        full.errno, full.filename = code, str(path)
        return full


# The messages torch's C++ stream writer raises (as RuntimeError) when a write to a file fails.
_TORCH_WRITE_FAILED = ("iostream error", "file write failed", "unexpected pos")


def free_space(folder: Path) -> str:
    """``<N> MiB free in <folder>``, for messages about a full disk."""
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.0f} MiB free in {folder}"
    except OSError:
        return f"free space in {folder} unknown"


def _disk_full(path: Path, exc: BaseException) -> DiskFull | None:
    """The one-line :class:`DiskFull` that ``exc`` amounts to, or None if it is another error."""
    if isinstance(exc, DiskFull):
        return None  # already translated (a nested atomic writer)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        reason = "no space left on device"
    elif isinstance(exc, OSError) and exc.errno == errno.EDQUOT:
        reason = "disk quota exceeded (no space left on device for this user)"
    elif isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILED):
        reason = f"no space left on device, most likely (the write failed: {str(exc).splitlines()[0][:120]})"
    else:
        return None
    code = errno.ENOSPC if reason.startswith("no space") else errno.EDQUOT
    return DiskFull.at(path, f"{reason} while writing it ({free_space(path.parent)})", code)


def _sibling(path: Path, suffix: str) -> Path:
    """A fresh hidden name next to ``path`` (``.name.<random><suffix>``)."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{suffix}")


def _new_file(path: Path, suffix: str) -> Path:
    """Create an empty, unique temporary file next to ``path`` with mode 0666 & ~umask.

    ``os.open(..., O_EXCL, 0o666)`` lets the kernel apply the umask (and any default ACL), as for
    any other file the user creates; ``tempfile.mkstemp`` would force 0600 whatever the umask.
    """
    for _ in range(100):
        tmp = _sibling(path, suffix)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: cannot create a unique temporary file for {path.name}")


def _new_dir(path: Path, suffix: str) -> Path:
    """Create a unique temporary folder next to ``path`` with mode 0777 & ~umask (not mkdtemp's 0700)."""
    for _ in range(100):
        tmp = _sibling(path, suffix)
        try:
            tmp.mkdir(0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{path.parent}: cannot create a unique temporary folder for {path.name}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.

    The file exists (empty) when the block starts, with the umask's permissions; writers that
    open it for writing keep that mode.

    The temporary is removed if the block fails, so ``path`` keeps its old content; a full disk is
    raised as :class:`DiskFull` naming ``path``.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _new_file(path, suffix or path.suffix + ".tmp")
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as exc:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        if (full := _disk_full(path, exc)) is not None:
            raise full from exc
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds.

    An existing ``path`` is removed only after the new content is complete, so a failed run never
    leaves a directory that looks finished. The folder gets the umask's permissions, like ``mkdir``.
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _new_dir(path, ".tmp")
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if (full := _disk_full(path, exc)) is not None:
            raise full from exc
        raise


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Write JSON atomically (sorted keys keep outputs byte-stable for Snakemake's checksums)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=indent, sort_keys=True, default=_json_default) + "\n")


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON, naming the file in the error when it is missing or malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingInput(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def write_npz(path: str | os.PathLike[str], **arrays: Any) -> None:
    """``np.savez`` atomically and byte-reproducibly: numpy stamps each zip member with the current
    time, so two identical evaluations would write different bytes; here every member gets the zip
    epoch (1980-01-01), in the given order."""
    import zipfile

    import numpy as np

    with atomic_path(path, suffix=".npz.tmp") as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
