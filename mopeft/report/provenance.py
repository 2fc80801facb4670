"""Where a table's numbers came from: config, code version, base weights and data kind.

Why every table carries this: a demo run on synthetic miniatures with random-init weights produces
tables that look exactly like real ones; the provenance lines are what stops anyone from mistaking
one for the other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mopeft.environment import REPO_ROOT, describe, git_state
from mopeft.io import sha256_file

__all__ = ["REPO_ROOT", "collect_provenance", "environments", "git_state", "provenance_lines"]


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
        "environments": environments(cells),
    }


def cell_environments(cell: Mapping[str, Any]) -> list[Any]:
    """The environment records one input came from: a combined cell's units' records when it has
    them (the evaluations ran there, not where they were combined), else its own; [None] when it
    was written before environments were recorded."""
    units = cell.get("unit_environments")
    if isinstance(units, list) and units:
        return list(units)
    return [cell.get("environment")]


def environments(cells: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The distinct environments of ``cells``, each as {"record", "inputs"} (how many inputs used
    it), in first-seen order; a cell without a record counts under record None ("unknown")."""
    seen: dict[str, dict[str, Any]] = {}
    for cell in cells:
        keys = set()
        for record in cell_environments(cell):
            key = json.dumps(record, sort_keys=True)
            entry = seen.setdefault(key, {"record": record, "inputs": 0})
            if key not in keys:
                entry["inputs"] += 1
                keys.add(key)
    return list(seen.values())


def environment_lines(envs: list[Mapping[str, Any]]) -> list[str]:
    """``Environment: ...`` for one environment, one line each (with its input count) for several:
    a table whose cells ran on two machines or software stacks must say so."""
    if not envs:
        return ["Environment: n/a (no inputs)"]
    if len(envs) == 1:
        return [f"Environment: {describe(envs[0]['record'])}"]
    lines = [f"Environments: {len(envs)} distinct (the inputs were produced on different setups)"]
    lines += [
        f"Environment {i} (used by {e['inputs']} inputs): {describe(e['record'])}"
        for i, e in enumerate(envs, 1)
    ]
    return lines


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
    if "environments" in prov:
        lines += environment_lines(prov["environments"])
    extra = {
        k: v
        for k, v in prov.items()
        if k not in {"config", "config_sha256", "git_commit", "git_dirty", "weights", "data", "environments"}
    }
    lines += [f"{k.replace('_', ' ').capitalize()}: {v}" for k, v in extra.items()]
    return lines
