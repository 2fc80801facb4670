"""The resume file (``train_state.pt``): which run wrote it, and what happens when it is not ours.

A resume file is used only by the run that wrote it. "The same run" is recorded as the fingerprint's
*parts* (settings, method and options, the base model's weights and init seed, the training data's
content), not only their digest, so that a mismatch can say which of them changed. The data part
hashes the bytes of every training image and label: a prepared folder edited in place (labels
inverted, images replaced) keeps its file names and its meta.json, and must still not resume a run
trained on the old content.

A file that is not ours, or that cannot be read (truncated by a full disk or a killed copy), is
moved aside to ``train_state.pt.stale-<UTC time>``, never deleted, and training starts over: a
SLURM retry then runs instead of dying on the same file every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mopeft.io import sha256_file
from mopeft.torch_files import UnreadableFile, load_torch, save_torch

log = logging.getLogger(__name__)

# Keys every resume file holds (``fingerprint_parts`` only since the parts are recorded).
KEYS = ("fingerprint", "step", "losses", "trainable", "optimizer")


def data_digest(pairs: Sequence[tuple[Path, Path]], threads: int = 8) -> dict[str, Any]:
    """The training data's identity: the count and one sha256 over every (image, label) pair's
    names and bytes, in the loader's order. Threads overlap the reads (hashlib releases the GIL),
    which is what matters on a network file system; a prepared dataset is read once this way."""
    files = [path for pair in pairs for path in pair]
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        digests = list(pool.map(sha256_file, files))
    h = hashlib.sha256()
    for path, digest in zip(files, digests, strict=True):
        h.update(f"{path.name}\t{digest}\n".encode())
    return {"pairs": len(pairs), "sha256": h.hexdigest()}


def digest(parts: Mapping[str, Any]) -> str:
    """The fingerprint: one sha256 of the parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text[:12] + "…" if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``field: old -> new`` for every fingerprint field that differs (dotted names, digests cut
    to 12 characters), in a stable order."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    out = []
    for key in sorted(a.keys() | b.keys()):
        before, after = a.get(key, missing), b.get(key, missing)
        if before != after:
            shown = [("(none)" if v is missing else _short(v)) for v in (before, after)]
            out.append(f"{key}: {shown[0]} -> {shown[1]}")
    return out


def set_aside(path: Path) -> Path:
    """Rename ``path`` to ``<name>.stale-<UTC time>`` (``-1``, ``-2``… if taken); return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for n in range(1000):
        target = path.with_name(f"{path.name}.stale-{stamp}" + (f"-{n}" if n else ""))
        if not target.exists():
            os.replace(path, target)
            return target
    raise FileExistsError(f"{path}: too many stale copies next to it; delete the old {path.name}.stale-*")


def read_resume(path: Path, parts: Mapping[str, Any]) -> dict[str, Any] | None:
    """The resume state at ``path`` if it belongs to the run described by ``parts``; otherwise
    None, the file moved aside with a warning that names it and why (unreadable, or which
    fingerprint fields changed)."""
    if not path.exists():
        return None
    try:
        state = load_torch(path)
    except UnreadableFile as exc:
        discard(path, str(exc).removeprefix(f"{path}: "))
        return None
    if not isinstance(state, dict) or any(key not in state for key in KEYS):
        discard(path, "not a mopeft resume file")
        return None
    if "fingerprint_parts" not in state:
        discard(path, "written by an older mopeft that did not record what its fingerprint covers")
        return None
    if state["fingerprint"] != digest(parts):
        changed = differences(state["fingerprint_parts"], parts) or ["(fingerprint only)"]
        discard(path, "it belongs to a different run: " + "; ".join(changed))
        return None
    return state


def discard(path: Path, why: str) -> Path:
    """Move a resume file that must not be used aside, saying which and why; training starts over."""
    stale = set_aside(path)
    log.warning("%s: %s; moved it to %s and training starts over", path, why, stale.name)
    return stale


def write_resume(path: Path, state: Mapping[str, Any]) -> None:
    """Atomically, with the same bytes for the same state (:func:`mopeft.torch_files.save_torch`)."""
    save_torch(path, dict(state))
