"""Tables 4.6–4.8: MoPEFT ablations of LoRA rank, prefix length and adapter bottleneck size.

Why columns are placed from ``method_options`` and not from variant names: the variant name is a
path label chosen by the pipeline, the options are what the model was actually built with. A cell
goes into the column of option value v of ablation P only if every *other* ablated option is at the
stated default — otherwise it belongs to a different ablation (the ``default`` cell, r=8 L=20 D_mid=64,
fills the r8, L20 and dmid64 columns of all three tables).

Also here: the check that the study's main-table MoPEFT numbers coincide with its r=16 / L=20 /
D_mid=256 ablation cells, computed from the CSVs so the note can never drift from the data.
"""

from __future__ import annotations

import argparse
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import pandas as pd

from mopeft.errors import InputError
from mopeft.methods.registry import METHOD_SPECS
from mopeft.report import paper, uncertainty
from mopeft.report.provenance import collect_provenance
from mopeft.report.registry import table_spec
from mopeft.report.tables import (
    Cell,
    add_outside_rows,
    comparison_table,
    flag_kfold,
    load_cells,
    outside_note,
    undefined_iou_note,
    write_table,
)

MATCH_TOLERANCE = 0.05  # the study's own tables disagree by up to 0.03 (UAVid, FloodNet)


def defaults() -> dict[str, int]:
    """MoPEFT's defaults of the three ablated options (the registry's; the thesis states the same:
    r = 8, L = 20, D_mid = 64): our ``default`` cell."""
    spec = METHOD_SPECS["mopeft"]
    return {option: int(spec.defaults[option]) for option in paper.ABLATIONS}


def cell_options(cell: Cell) -> dict[str, int]:
    """The three ablated MoPEFT options of a cell, from the options it was built with."""
    missing = [k for k in paper.ABLATIONS if k not in cell.options]
    if missing:
        raise InputError(f"{cell.path}: method_options lacks {missing} (not a MoPEFT cell's metrics.json?)")
    try:
        return {k: int(cell.options[k]) for k in paper.ABLATIONS}
    except (TypeError, ValueError):
        raise InputError(f"{cell.path}: method options {cell.options} are not integers") from None


def ablation_column(cell: Cell, option: str, values: dict[int, str]) -> str | None:
    """Column of ``option``'s ablation table this MoPEFT cell fills, or None if it belongs elsewhere."""
    if cell.method != "mopeft":
        return None
    opts = cell_options(cell)
    if any(opts[k] != v for k, v in defaults().items() if k != option):
        return None
    return values.get(opts[option])


def mopeft_matching(directory: Any = None, tolerance: float = MATCH_TOLERANCE) -> dict[str, dict[str, Any]]:
    """For each ablation, which of its columns equals the main-table MoPEFT value, per dataset.

    Returns ``{kind: {"column": most frequent closest column, "matched": datasets within tolerance,
    "total": datasets compared, "max_abs_diff": ..., "per_dataset": {dataset: column}}}``.
    """
    main = paper.main_results(directory).set_index("dataset")["mopeft"]
    out: dict[str, dict[str, Any]] = {}
    for option in paper.ABLATIONS:
        table = paper.ablation(option, directory).set_index("dataset")
        cols = list(paper.ablation_values(option, directory).values())
        per: dict[str, str] = {}
        diffs: dict[str, float] = {}
        for dataset, row in table.iterrows():
            if dataset not in main.index or pd.isna(main[dataset]):
                continue
            dist = {c: abs(float(row[c]) - float(main[dataset])) for c in cols if not pd.isna(row[c])}
            if not dist:
                continue
            best = min(dist, key=dist.__getitem__)
            per[str(dataset)], diffs[str(dataset)] = best, dist[best]
        column = Counter(per.values()).most_common(1)[0][0] if per else ""
        matched = [d for d, c in per.items() if c == column and diffs[d] <= tolerance + 1e-9]
        out[option] = {
            "column": column,
            "matched": len(matched),
            "total": len(per),
            "max_abs_diff": round(max((diffs[d] for d in matched), default=math.nan), 2),
            "per_dataset": per,
        }
    return out


def mopeft_note(directory: Any = None) -> str:
    """The caveat printed under Tables 4.3/4.4/4.6–4.8 (values computed from the study's CSVs)."""
    match = mopeft_matching(directory)
    parts, settings = [], []
    for option, m in match.items():
        spec = paper.ABLATIONS[option]
        value = m["column"][len(spec["prefix"]) :] if m["column"] else "?"
        settings.append(f"{spec['label']}={value}")
        parts.append(
            f"matches {m['column']} on {m['matched']}/{m['total']} datasets (max |Δ| {m['max_abs_diff']:.2f})"
        )
    stated = ", ".join(f"{paper.ABLATIONS[k]['label']}={v}" for k, v in defaults().items())
    return (
        f"The study's main-table MoPEFT values equal its ablation cells {', '.join(settings)}, "
        f"not its stated defaults {stated} (computed from paper/: main-table MoPEFT "
        f"{'; '.join(parts)}). "
        f"We run the stated defaults ({stated}, variant `default`), so our MoPEFT column is best compared "
        "with the study's rank_8 / L_20 / dmid_64 ablation columns."
    )


def ablation_table(
    cells: Iterable[Cell], option: str, directory: Any = None, bootstrap: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[Cell]]:
    """CSV frame, display frame, notes and the cells used for the ablation of ``option``
    (``bootstrap`` > 0: a 95 % interval per value from that many resamples of the test images)."""
    ref = paper.ablation(option, directory)
    values = paper.ablation_values(option, directory)
    main = paper.main_results(directory).set_index("dataset")
    datasets = ref["dataset"].tolist()
    rows = pd.DataFrame(
        {
            "domain": [main["domain"].get(d, "") for d in datasets],
            "dataset": datasets,
            "name": [main["paper_name"].get(d, d) for d in datasets],
        }
    )
    columns = [*values.values(), "baseline"]
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    used: list[Cell] = []
    for cell in cells:
        if cell.method == "baseline" and cell.variant == "default":
            col: str | None = "baseline"
        else:
            col = ablation_column(cell, option, values)
        if col is not None:
            groups[(cell.dataset, col)].append(cell)
            used.append(cell)
    rows, extra = add_outside_rows(rows, used)  # datasets the study did not ablate (a folder dataset)
    column_of = {id(c): col for (_, col), group in groups.items() for c in group}
    ours = {k: [c.miou for c in v] for k, v in groups.items()}
    ref_idx = ref.set_index("dataset")
    paper_vals = {(d, c): ref_idx.at[d, c] for d in datasets for c in columns if c in ref_idx.columns}
    label = paper.ABLATIONS[option]["label"]
    labels = {c: f"{label}={v}" for v, c in values.items()} | {"baseline": "Baseline"}
    cis = uncertainty.intervals(groups, bootstrap) if bootstrap else None
    df, display, notes = comparison_table(
        rows, columns, ours, paper_vals, labels, intervals=cis, overall=datasets if extra else None
    )
    df, display, kfold_notes = flag_kfold(df, display, used)
    notes += kfold_notes
    if extra:
        notes.append(outside_note(extra))
    if undefined := undefined_iou_note((c, labels[column_of[id(c)]]) for c in used):
        notes.append(undefined)
    notes.insert(0, mopeft_note(directory))
    notes.insert(
        1,
        f"Columns are placed from each cell's method_options ({label} varied, the other options at "
        f"the stated defaults); the {label}={defaults()[option]} "
        "column is our `default` MoPEFT cell.",
    )
    return df, display, notes, used


def build(args: argparse.Namespace) -> None:
    """``mopeft table 4.6|4.7|4.8 --cells <metrics.json>...``: the registry says which option."""
    spec = table_spec(args.name)
    cells = load_cells(args.cells)
    bootstrap = getattr(args, "bootstrap", 0)
    df, display, notes, used = ablation_table(cells, spec.option, getattr(args, "paper_dir", None), bootstrap)
    prov = collect_provenance(args.config, [c.raw for c in used])
    write_table(df, args.out, spec.title, prov, notes, display=display)
