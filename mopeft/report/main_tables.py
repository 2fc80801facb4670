"""Tables 4.3 and 4.4: per-dataset mIoU of each method, ours beside the study's.

Why only ``default`` cells: ablation cells of MoPEFT (``r16``, ``L5``, ...) are a different model;
mixing them into the main table would silently change what "MoPEFT" means. PAXRay-4's row is the
cell whose metrics.json already combines its four tasks (``combine: mean``), so nothing is averaged
here.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from mopeft.report import paper, uncertainty
from mopeft.report.ablations import mopeft_note
from mopeft.report.provenance import collect_provenance
from mopeft.report.registry import table_spec
from mopeft.report.tables import METHOD_LABELS, Cell, comparison_table, flag_kfold, load_cells, write_table


def main_table(
    cells: Iterable[Cell], methods: Sequence[str], directory: Any = None, bootstrap: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[Cell]]:
    """CSV frame, display frame, notes and used cells for a method-per-column table over the 22 datasets.

    ``bootstrap`` > 0: every value gets a 95 % interval from that many resamples of the test images,
    and MoPEFT's column is compared with the best single PEFT method by a paired bootstrap.
    Methods the study did not run (``mopeft_logit``) get no study value.
    """
    ref = paper.main_results(directory)
    rows = ref.rename(columns={"paper_name": "name"})[["domain", "dataset", "name"]]
    known = set(rows["dataset"])
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    used: list[Cell] = []
    ignored: list[str] = []
    for cell in cells:
        if cell.method not in methods or cell.variant != "default":
            continue
        if cell.dataset not in known:
            ignored.append(f"{cell.dataset}/{cell.method}")
            continue
        groups[(cell.dataset, cell.method)].append(cell)
        used.append(cell)
    ours = {k: [c.miou for c in v] for k, v in groups.items()}
    ref_idx = ref.set_index("dataset")
    paper_vals = {(d, m): ref_idx.at[d, m] for d in rows["dataset"] for m in methods if m in ref.columns}
    labels = {m: METHOD_LABELS.get(m, m) for m in methods}
    cis = uncertainty.intervals(groups, bootstrap) if bootstrap else None
    df, display, notes = comparison_table(rows, list(methods), ours, paper_vals, labels, intervals=cis)
    if bootstrap and "mopeft" in methods and set(methods) & set(uncertainty.SINGLE_PEFT):
        singles = [m for m in uncertainty.SINGLE_PEFT if m in methods]
        paired = uncertainty.versus_best_single(
            groups, list(rows["dataset"]), "mopeft", bootstrap, candidates=singles
        )
        df, display = _with_paired(df, display, paired, labels)
        notes.append(uncertainty.paired_note(labels["mopeft"]))
    df, display, kfold_notes = flag_kfold(df, display, used)
    notes += kfold_notes
    if "mopeft" in methods:
        notes.insert(0, mopeft_note(directory))
    if "mopeft_logit" in methods:
        notes.insert(
            1,
            f"{labels['mopeft_logit']}: this project's addition, not the study's. MoPEFT (the study's "
            "gate) scales the prefix keys and values by G_P; MoPEFT-logit adds log G_P to the prefix "
            "logits instead, which can switch the prefix off (docs/methods.md). No study value exists.",
        )
    if "paxray4" in known:
        notes.append(
            "PAXRay-4: the mean of the four binary tasks' mIoUs, combined in the cell's metrics.json."
        )
    if ignored:
        notes.append(
            f"Ignored cells of datasets outside the study's table: {', '.join(sorted(set(ignored)))}."
        )
    return df, display, notes, used


def _with_paired(
    df: pd.DataFrame, display: pd.DataFrame, paired: dict[str, dict[str, Any]], labels: dict[str, str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Append the MoPEFT − best single PEFT columns (CSV: numbers; display: compact text)."""
    df, display = df.copy(), display.copy()
    rows = [paired.get(d) for d in df["dataset"]]
    df["mopeft_vs_best_single"] = [r["best"] if r else "" for r in rows]
    for key in ("diff", "low", "high"):
        df[f"mopeft_vs_best_single_{key}"] = [uncertainty.round2(r[key]) if r else float("nan") for r in rows]
    df["mopeft_vs_best_single_excludes_zero"] = [bool(r["excludes_zero"]) if r else pd.NA for r in rows]
    display[f"{labels['mopeft']} − best single"] = [uncertainty.paired_text(r, labels) for r in rows]
    return df, display


def build(args: argparse.Namespace) -> None:
    """``mopeft table 4.3|4.4 --cells <metrics.json>...``: the registry's method columns per dataset."""
    spec = table_spec(args.name)
    cells = load_cells(args.cells)
    bootstrap = getattr(args, "bootstrap", 0)
    df, display, notes, used = main_table(cells, spec.methods, getattr(args, "paper_dir", None), bootstrap)
    prov = collect_provenance(args.config, [c.raw for c in used])
    write_table(df, args.out, spec.title, prov, notes, display=display)
