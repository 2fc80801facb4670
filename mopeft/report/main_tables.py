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

from mopeft.report import paper
from mopeft.report.ablations import mopeft_note
from mopeft.report.provenance import collect_provenance
from mopeft.report.registry import table_spec
from mopeft.report.tables import METHOD_LABELS, Cell, comparison_table, flag_kfold, load_cells, write_table


def main_table(
    cells: Iterable[Cell], methods: Sequence[str], directory: Any = None
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[Cell]]:
    """CSV frame, display frame, notes and used cells for a method-per-column table over the 22 datasets."""
    ref = paper.main_results(directory)
    missing = [m for m in methods if m not in ref.columns]
    if missing:
        raise ValueError(f"{paper.paper_dir(directory) / 'main_results.csv'}: no column(s) {missing}")
    rows = ref.rename(columns={"paper_name": "name"})[["domain", "dataset", "name"]]
    known = set(rows["dataset"])
    ours: dict[tuple[str, str], list[float]] = defaultdict(list)
    used: list[Cell] = []
    ignored: list[str] = []
    for cell in cells:
        if cell.method not in methods or cell.variant != "default":
            continue
        if cell.dataset not in known:
            ignored.append(f"{cell.dataset}/{cell.method}")
            continue
        ours[(cell.dataset, cell.method)].append(cell.miou)
        used.append(cell)
    ref_idx = ref.set_index("dataset")
    paper_vals = {(d, m): ref_idx.at[d, m] for d in rows["dataset"] for m in methods}
    labels = {m: METHOD_LABELS.get(m, m) for m in methods}
    df, display, notes = comparison_table(rows, list(methods), ours, paper_vals, labels)
    df, display, kfold_notes = flag_kfold(df, display, used)
    notes += kfold_notes
    if "mopeft" in methods:
        notes.insert(0, mopeft_note(directory))
    if "paxray4" in known:
        notes.append(
            "PAXRay-4: the mean of the four binary tasks' mIoUs, combined in the cell's metrics.json."
        )
    if ignored:
        notes.append(
            f"Ignored cells of datasets outside the study's table: {', '.join(sorted(set(ignored)))}."
        )
    return df, display, notes, used


def build(args: argparse.Namespace) -> None:
    """``mopeft table 4.3|4.4 --cells <metrics.json>...``: the registry's method columns per dataset."""
    spec = table_spec(args.name)
    cells = load_cells(args.cells)
    df, display, notes, used = main_table(cells, spec.methods, getattr(args, "paper_dir", None))
    prov = collect_provenance(args.config, [c.raw for c in used])
    write_table(df, args.out, spec.title, prov, notes, display=display)
