"""The software and hardware a result was produced with: one ``environment`` block per output.

Why: a timing or an mIoU is only comparable with another one from the same software stack and
GPU; without a record, a table silently mixes two machines. Every ``train_log.json``,
``metrics.json``, ``bench.json`` and detections JSON carries :func:`environment_record`, and the
tables' provenance lists the distinct records their inputs came from.

Design choices:

- **Deterministic on one machine**: no timestamps, no host name, no PID, so a rerun's
  ``metrics.json`` is byte-identical (the determinism tests compare them).
- **Cached per process** (``functools.cache``): ``nvidia-smi`` and the package scan run once.
- **torch imported lazily**: this is a base module, and the torch-free DAG imports base modules.
- **The package set** (sorted ``name==version`` lines of every installed distribution) is too long
  for each JSON: the record holds its sha256, and :func:`write_package_set` writes the list once
  as ``packages-<sha256[:12]>.txt`` into the folder of the output that names it (the command's
  output folder; only a command knows where it writes, and a folder beside its output is the one
  place that is always writable and travels with the result). It is written atomically and only
  when absent: the name is its content's hash, so an existing file is already right.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]

# The keys of every record, in order (tests and the tables' provenance rely on all being present).
KEYS = (
    "python",
    "torch",
    "cuda",
    "cudnn",
    "gpu_name",
    "gpu_count",
    "driver",
    "mopeft",
    "git_commit",
    "git_dirty",
    "packages_sha256",
)


def git_state(repo: str | os.PathLike[str] = REPO_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of ``repo``; ("unknown", None) when it is not a git checkout or git is missing."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return (commit or "unknown"), bool(status.strip())


@functools.cache
def package_lines() -> tuple[str, ...]:
    """Sorted, distinct ``name==version`` of every installed distribution (what the hash covers)."""
    lines = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]}
    return tuple(sorted(lines, key=str.lower))


def package_set_sha256() -> str:
    """sha256 of :func:`package_lines` joined by newlines (with a final newline, as the file has)."""
    return hashlib.sha256(_package_text().encode()).hexdigest()


def _package_text() -> str:
    return "".join(f"{line}\n" for line in package_lines())


def driver_version(timeout: float = 5.0) -> str | None:
    """The NVIDIA driver's version from ``nvidia-smi``; None without it, on failure or timeout."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=timeout,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    first = out.strip().splitlines()
    return first[0].strip() if first else None


def _torch_facts() -> dict[str, Any]:
    """torch, CUDA and cuDNN versions, GPU name and count; None where torch or a GPU is absent."""
    try:
        import torch
    except ImportError:
        return {"torch": None, "cuda": None, "cudnn": None, "gpu_name": None, "gpu_count": 0}
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except RuntimeError:  # a CUDA build without a loadable cuDNN
        cudnn = None
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": str(cudnn) if cudnn is not None else None,
        "gpu_name": torch.cuda.get_device_name(0) if count else None,
        "gpu_count": count,
    }


@functools.cache
def _cached_record() -> tuple[tuple[str, Any], ...]:
    from mopeft import __version__

    commit, dirty = git_state()
    facts = _torch_facts()
    record = {
        "python": platform.python_version(),
        **facts,
        "driver": driver_version() if facts["gpu_count"] else None,
        "mopeft": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "packages_sha256": package_set_sha256(),
    }
    return tuple((k, record[k]) for k in KEYS)


def environment_record() -> dict[str, Any]:
    """This process's environment (a fresh dict each call, from a per-process cache)."""
    return dict(_cached_record())


def write_package_set(folder: str | os.PathLike[str]) -> Path:
    """Write the package list as ``folder/packages-<sha256[:12]>.txt`` unless it is there; its path."""
    from mopeft.io import write_text

    path = Path(folder) / f"packages-{package_set_sha256()[:12]}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, _package_text())
    return path


def record_environment(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The record for an output written into ``folder``, with its package list stored there."""
    write_package_set(folder)
    return environment_record()


def describe(record: Any) -> str:
    """One line for a table's provenance: torch, CUDA, GPU, packages; "unknown" without a record."""
    if not isinstance(record, dict):
        return "unknown (written before environments were recorded)"
    gpu = record.get("gpu_name") or "none"
    if record.get("gpu_count", 0) and int(record["gpu_count"]) > 1:
        gpu += f" x{record['gpu_count']}"
    packages = str(record.get("packages_sha256") or "?")[:12]
    return (
        f"Python {record.get('python') or '?'}, torch {record.get('torch') or 'none'}, "
        f"CUDA {record.get('cuda') or 'none'}, GPU {gpu}, driver {record.get('driver') or 'none'}, "
        f"mopeft {record.get('mopeft') or '?'} at {str(record.get('git_commit') or 'unknown')[:12]}"
        f"{' (dirty)' if record.get('git_dirty') else ''}, packages {packages}"
    )
