"""Atomic file output.

Snakemake trusts any output file that exists, so a half-written file left by a killed job would be
silently reused. Every artifact is therefore written to a temporary sibling and renamed into place
(rename is atomic on POSIX within one file system).

The temporaries are created with the modes a plain ``open``/``mkdir`` would give (0666/0777 minus
the umask), not ``tempfile``'s private 0600/0700: on a shared cluster, colleagues read the
prepared data, checkpoints and tables, and the umask is how the user says who may.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_file(path, suffix or path.suffix + ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; it replaces ``path`` only if the block succeeds.

    An existing ``path`` is removed only after the new content is complete, so a failed run never
    leaves a directory that looks finished. The folder gets the umask's permissions, like ``mkdir``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_dir(path, ".tmp")
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
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
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


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
