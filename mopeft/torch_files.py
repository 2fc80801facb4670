"""PyTorch files: written atomically with the same bytes for the same tensors, read with the safe
unpickler, and every failure one line naming the file.

Apart from :mod:`mopeft.io` because that module is imported by what the DAG reads at start-up,
which must not pull in torch.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch

from mopeft.errors import InputError, MissingInput
from mopeft.io import DiskFull, atomic_path, free_space


class UnreadableFile(InputError):
    """A PyTorch file that cannot (or must not) be loaded; the message names it and what to do."""


def _tensor_bytes(obj: Any) -> int:
    """The bytes of the tensor storages in a (nested) dict/list, each storage once: what
    ``torch.save`` writes at least."""
    storages: dict[tuple[str, int], int] = {}

    def walk(value: Any) -> None:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            storages[(str(value.device), storage.data_ptr() or id(storage))] = storage.nbytes()
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(obj)
    return sum(storages.values())


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` atomically, with the same bytes for the same tensors.

    ``torch.save`` to a file *name* prefixes every record of its zip with that name, here the random
    temporary one (``.model.pt.cebd50eb9310.pt/data.pkl``): identical trainings would write different
    bytes (and sha256). Given an open file, torch names the records ``archive/`` whatever the path,
    and streams them (no second copy of a 1 GB resume file in memory, as a BytesIO would hold).
    A disk too small for the tensors is refused before anything is written.
    """
    path = Path(path)
    need = _tensor_bytes(obj)
    try:
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else None
    except OSError:
        free = None
    if free is not None and need > free:
        what = f"no space left on device: it needs at least {need / 2**20:.0f} MiB, {free_space(path.parent)}"
        raise DiskFull.at(path, what)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())  # renamed into place only once on disk: a crash leaves old or new, whole


def _load_problem(exc: Exception) -> str:
    """What a failed ``torch.load`` means, in words, without torch's advice to pass
    ``weights_only=False`` (which would run whatever code the file holds)."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and "unsupported global" in text.lower():  # a callable
        return (
            "it holds Python objects besides tensors, which mopeft refuses to unpickle (loading them "
            "could run code); it is not a file mopeft or SAM wrote"
        )
    if isinstance(exc, (pickle.UnpicklingError, EOFError)) or "central directory" in text:
        return "truncated or not a PyTorch file"
    if isinstance(exc, OSError) and exc.errno == errno.EINVAL:
        return "truncated or not a PyTorch file"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if "weights_only" in text:
        return "it cannot be loaded safely (only tensors are allowed)"
    first = text.splitlines()[0][:160] if text else type(exc).__name__
    return f"unreadable ({first})"


def load_torch(path: str | os.PathLike[str], fix: str | None = None) -> Any:
    """``torch.load`` with the safe unpickler onto the CPU; any failure is one :class:`UnreadableFile`
    naming ``path``, what is wrong and ``fix`` (what the user should do)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MissingInput(f"{path}: file not found") from None
    except Exception as exc:
        raise UnreadableFile(f"{path}: {_load_problem(exc)}" + (f"; {fix}" if fix else "")) from None
