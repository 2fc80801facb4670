"""Where a table's numbers came from: config, code version, base weights and data kind.

Why every table carries this: a demo run on synthetic miniatures with random-init weights produces
tables that look exactly like real ones; the provenance lines are what stops anyone from mistaking
one for the other.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mopeft.io import sha256_file

REPO_ROOT = Path(__file__).resolve().parents[2]


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


def summarise(values: Iterable[Any], empty: str = "n/a") -> str:
    """One value if all agree, "mixed" if they differ (a table mixing sources must say so)."""
    distinct = {str(v) for v in values if v is not None}
    if not distinct:
        return empty
    return distinct.pop() if len(distinct) == 1 else "mixed"


def data_kind(flags: Iterable[Any]) -> str:
    """ "real", "synthetic" or "mixed" from the ``synthetic`` flags of cells or prepared datasets."""
    kinds = {"synthetic" if bool(f) else "real" for f in flags if f is not None}
    if not kinds:
        return "unknown"
    return kinds.pop() if len(kinds) == 1 else "mixed"


def efficiency_data(config_path: str | os.PathLike[str] | None, records: Iterable[Mapping[str, Any]]) -> str:
    """What Table 4.5's measurements ran on, for its ``Data:`` line: no dataset's images at all.

    `mopeft bench` times random images and labels, `mopeft flops` counts a zero image, `mopeft
    params` reads nothing; the only thing taken from a dataset is its class count (the decoder has
    one token per class), from the config's ``efficiency.dataset``.
    """
    dataset = None
    if config_path and Path(config_path).is_file():
        import yaml

        cfg = yaml.safe_load(Path(config_path).read_text()) or {}
        dataset = (cfg.get("efficiency") or {}).get("dataset") if isinstance(cfg, dict) else None
    k = summarise((r.get("num_classes") for r in records), empty="?")
    of = f"the class count of efficiency.dataset {dataset}" if dataset else "efficiency.dataset's class count"
    return (
        f"synthetic inputs, no dataset's images (timings: random images and labels; FLOPs: a zero image; "
        f"parameters: none), K = {k} classes ({of})"
    )


def collect_provenance(
    config_path: str | os.PathLike[str] | None,
    cells: Iterable[Mapping[str, Any]],
    repo: str | os.PathLike[str] = REPO_ROOT,
) -> dict[str, Any]:
    """Provenance of a table built from ``cells`` (metrics.json or meta.json dicts).

    ``weights`` is the base-weights sha256 or "random init" (or "mixed"); ``data`` is real/synthetic/mixed.
    """
    cells = list(cells)
    commit, dirty = git_state(repo)
    config = str(config_path) if config_path else "not given"
    config_sha = sha256_file(config_path) if config_path and Path(config_path).is_file() else None
    return {
        "config": config,
        "config_sha256": config_sha,
        "git_commit": commit,
        "git_dirty": dirty,
        "weights": summarise((c.get("weights") for c in cells), empty="n/a"),
        "data": data_kind(c.get("synthetic") for c in cells),
        "num_inputs": len(cells),
    }


def provenance_lines(prov: Mapping[str, Any]) -> list[str]:
    """Human-readable lines for the Markdown/LaTeX footers (one fact per line)."""
    dirty = {True: " (dirty working tree)", False: "", None: ""}[prov.get("git_dirty")]
    config = prov.get("config", "not given")
    if prov.get("config_sha256"):
        config += f" (sha256 {str(prov['config_sha256'])[:12]})"
    lines = [
        f"Config: {config}",
        f"Git commit: {prov.get('git_commit', 'unknown')}{dirty}",
        f"Base weights: {prov.get('weights', 'n/a')}",
        f"Data: {prov.get('data', 'unknown')}",
    ]
    extra = {
        k: v
        for k, v in prov.items()
        if k not in {"config", "config_sha256", "git_commit", "git_dirty", "weights", "data"}
    }
    lines += [f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in extra.items()]
    return lines
