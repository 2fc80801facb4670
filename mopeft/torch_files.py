"""PyTorch and safetensors files: written atomically with the same bytes for the same tensors, read
safely (the safe unpickler; safetensors holds no code at all), and every failure one line naming the
file.

Apart from :mod:`mopeft.io` because that module is imported by what the DAG reads at start-up,
which must not pull in torch.
"""

from __future__ import annotations

import errno
import json
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


def _check_room(path: Path, obj: Any) -> None:
    """Refuse a disk too small for the tensors before anything is written."""
    need = _tensor_bytes(obj)
    try:
        free = shutil.disk_usage(path.parent).free if path.parent.is_dir() else None
    except OSError:
        free = None
    if free is not None and need > free:
        what = f"no space left on device: it needs at least {need / 2**20:.0f} MiB, {free_space(path.parent)}"
        raise DiskFull.at(path, what)


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """``torch.save`` atomically, with the same bytes for the same tensors.

    ``torch.save`` to a file *name* prefixes every record of its zip with that name, here the random
    temporary one (``.train_state.pt.cebd50eb9310.pt/data.pkl``): identical trainings would write
    different bytes (and sha256). Given an open file, torch names the records ``archive/`` whatever the path,
    and streams them (no second copy of a 1 GB resume file in memory, as a BytesIO would hold).
    A disk too small for the tensors is refused before anything is written.
    """
    path = Path(path)
    _check_room(path, obj)
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


# safetensors' names of the torch dtypes a checkpoint can hold.
_SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def save_safetensors(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically, with the same bytes for the same tensors and metadata.

    Written here rather than with ``safetensors.torch.save_file``: that library serialises
    ``__metadata__`` from a hash map whose order changes from one process to the next, so identical
    trainings would write different bytes (and sha256). The layout is the format's own (8-byte
    little-endian header length, JSON header padded with spaces to 8 bytes, then the raw data),
    tensors ordered like the library orders them (largest element first, then by name) so that every
    tensor starts aligned to its element size; files are read back by the library itself.
    """
    path = Path(path)
    meta = {key: metadata[key] for key in sorted(metadata or {})}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise TypeError("safetensors metadata must map str to str")
    _check_room(path, tensors)
    order = sorted(tensors, key=lambda name: (-tensors[name].element_size(), name))
    header: dict[str, Any] = {"__metadata__": meta} if meta else {}
    offset = 0
    for name in order:
        t = tensors[name]
        if t.dtype not in _SAFETENSORS_DTYPES:
            raise TypeError(f"{name}: dtype {t.dtype} has no safetensors name here")
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in order:
            flat = tensors[name].detach().to("cpu").contiguous().reshape(-1)
            if flat.numel():
                f.write(memoryview(flat.view(torch.uint8).numpy()))
        f.flush()
        os.fsync(f.fileno())  # renamed into place only once on disk: a crash leaves old or new, whole


def is_safetensors(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is (meant to be) a safetensors file: by its name, or by its first bytes
    (an 8-byte header length, then the JSON header's ``{``), which no PyTorch file starts with."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{"


def load_safetensors(
    path: str | os.PathLike[str], fix: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on the CPU) and the ``__metadata__`` of a safetensors file; any failure is one
    :class:`UnreadableFile` naming ``path``, what is wrong and ``fix``."""
    from safetensors import safe_open

    if not Path(path).exists():
        raise MissingInput(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name).clone() for name in f.keys()}  # noqa: SIM118 (no __iter__)
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
        raise UnreadableFile(f"{path}: {problem}" + (f"; {fix}" if fix else "")) from None
    except Exception:  # safetensors raises its own error type for every malformed header or size
        raise UnreadableFile(
            f"{path}: truncated or not a safetensors file" + (f"; {fix}" if fix else "")
        ) from None
    return tensors, metadata
