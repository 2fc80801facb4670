"""Bootstrap intervals and paired differences for the result tables (beyond the study).

The study reports single runs, so a reader cannot tell which of its half-point differences are
real. Every evaluation keeps per-image counts (``per_image.npz``), from which
:mod:`mopeft.evaluation.bootstrap` resamples test images (and seeds, when a cell has several).
Here the tables' cells are grouped and handed to it: an interval per (dataset, column), and for
MoPEFT the paired difference to the best single PEFT method on the same test images.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mopeft.evaluation.bootstrap import cell_interval, load_cell_runs, paired_difference
from mopeft.report.tables import MISSING, Cell

SINGLE_PEFT = ("lora", "vpt_deep", "vpt", "adapter")
DEFAULT_RESAMPLES = 1000


def intervals(
    groups: Mapping[tuple[str, str], Sequence[Cell]], n_resamples: int, seed: int = 0
) -> dict[tuple[str, str], tuple[float, float]]:
    """(low, high) of the 95 % interval of every group's mIoU (its seeds pooled two-level)."""
    out = {}
    for key, cells in groups.items():
        ci = cell_interval(load_cell_runs([c.folder for c in cells]), n_resamples=n_resamples, seed=seed)
        out[key] = (float(ci["low"]), float(ci["high"]))
    return out


def versus_best_single(
    groups: Mapping[tuple[str, str], Sequence[Cell]],
    datasets: Sequence[str],
    target: str,
    n_resamples: int,
    seed: int = 0,
    candidates: Sequence[str] = SINGLE_PEFT,
) -> dict[str, dict[str, Any]]:
    """Per dataset: ``target`` minus the single PEFT method with the best mean mIoU, paired over
    the same test images (interval, and whether it excludes 0)."""
    out: dict[str, dict[str, Any]] = {}
    for dataset in datasets:
        if (dataset, target) not in groups:
            continue
        scores = {
            m: sum(c.miou for c in groups[(dataset, m)]) / len(groups[(dataset, m)])
            for m in candidates
            if (dataset, m) in groups
        }
        if not scores:
            continue
        best = max(scores, key=scores.__getitem__)
        runs = {m: load_cell_runs([c.folder for c in groups[(dataset, m)]]) for m in (target, best)}
        d = paired_difference(runs[target], runs[best], n_resamples=n_resamples, seed=seed)
        out[dataset] = {"best": best, **{k: d[k] for k in ("diff", "low", "high", "excludes_zero")}}
    return out


def paired_text(row: Mapping[str, Any] | None, labels: Mapping[str, str]) -> str:
    """``+1.23 [0.40, 2.10]* vs LoRA``; the star marks an interval that excludes 0."""
    if not row:
        return MISSING
    star = "*" if row["excludes_zero"] else ""
    best = labels.get(row["best"], row["best"])
    return f"{row['diff']:+.2f} [{row['low']:.2f}, {row['high']:.2f}]{star} vs {best}"


def paired_note(target_label: str) -> str:
    return (
        f"{target_label} − best single PEFT: the difference to the single PEFT method (LoRA, VPT-Deep, "
        "VPT, Adapter) with the best mean mIoU on that dataset, with a 95 % paired bootstrap interval over "
        "the same test images; * marks an interval that excludes 0. Picking the best method on the "
        "same images makes a win conservative and a loss slightly overstated."
    )


def round2(x: float) -> float:
    return math.nan if x is None or math.isnan(x) else round(float(x), 2)
