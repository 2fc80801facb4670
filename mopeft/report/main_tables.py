"""Tables 4.3 and 4.4: per-dataset mIoU of each method, ours beside the study's.

Why only ``default`` cells: ablation cells of MoPEFT (``r16``, ``L5``, ...) are a different model;
mixing them into the main table would silently change what "MoPEFT" means. PAXRay-4's row is the
cell whose metrics.json already combines its four tasks (``combine: mean``), so nothing is averaged
here.

Methods beyond the study (the run's ``peft_methods``: HF peft tuners, ``peft_<x>``) get columns after
the study's in the tables that take them (``TableSpec.beyond``: Table 4.4), labelled with the mark §
and described in a note from what their cells were trained with; the study's columns are unchanged.

Datasets outside the study's list (folder datasets of the config, ``custom_datasets``) get rows
after the study's, placed by the domain and name their cells record (default "Custom"), with their
own domain mean; the overall mean stays over the study's datasets, so it remains comparable with
the study's.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mopeft.errors import InputError
from mopeft.methods.registry import is_peft_method
from mopeft.report import curves, paper, uncertainty
from mopeft.report.ablations import mopeft_note
from mopeft.report.provenance import collect_provenance
from mopeft.report.registry import table_spec
from mopeft.report.tables import (
    BEYOND_MARK,
    METHOD_LABELS,
    Cell,
    add_outside_rows,
    comparison_table,
    flag_kfold,
    load_cells,
    outside_note,
    undefined_iou_note,
    write_table,
)


def main_table(
    cells: Iterable[Cell],
    methods: Sequence[str],
    directory: Any = None,
    bootstrap: int = 0,
    losses: bool = False,
    beyond: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str], list[Cell]]:
    """CSV frame, display frame, notes and used cells for a method-per-column table over the 22
    datasets (and any dataset outside the study's list, in rows after them).

    ``bootstrap`` > 0: every value gets a 95 % interval from that many resamples of the test images,
    and MoPEFT's column is compared with the best single PEFT method by a paired bootstrap.
    ``losses``: read every used cell's train logs and name the runs whose loss did not fall.
    Methods the study did not run (``mopeft_logit``) get no study value. ``beyond``: method ->
    label of the methods beyond the study among ``methods`` (shown as ``label§``, with a note).
    """
    beyond = dict(beyond or {})
    ref = paper.main_results(directory)
    rows = ref.rename(columns={"paper_name": "name"})[["domain", "dataset", "name"]]
    study = list(rows["dataset"])
    groups: dict[tuple[str, str], list[Cell]] = defaultdict(list)
    used: list[Cell] = []
    for cell in cells:
        if cell.method not in methods or cell.variant != "default":
            continue
        groups[(cell.dataset, cell.method)].append(cell)
        used.append(cell)
    rows, extra = add_outside_rows(rows, used)
    ours = {k: [c.miou for c in v] for k, v in groups.items()}
    ref_idx = ref.set_index("dataset")
    paper_vals = {(d, m): ref_idx.at[d, m] for d in study for m in methods if m in ref.columns}
    labels = {m: f"{beyond[m]}{BEYOND_MARK}" if m in beyond else METHOD_LABELS.get(m, m) for m in methods}
    cis = uncertainty.intervals(groups, bootstrap) if bootstrap else None
    df, display, notes = comparison_table(
        rows, list(methods), ours, paper_vals, labels, intervals=cis, overall=study if extra else None
    )
    if bootstrap and "mopeft" in methods and set(methods) & set(uncertainty.SINGLE_PEFT):
        singles = [m for m in uncertainty.SINGLE_PEFT if m in methods]
        paired = uncertainty.versus_best_single(
            groups, list(rows["dataset"]), "mopeft", bootstrap, candidates=singles
        )
        df, display = _with_paired(df, display, paired, labels)
        notes.append(uncertainty.paired_note(labels["mopeft"]))
    df, display, kfold_notes = flag_kfold(df, display, used)
    notes += kfold_notes
    if losses:
        runs = curves.runs_of(used)
        display = _mark_not_falling(display, df, curves.flat_cells(runs), labels)
        notes.append(curves.loss_note(runs))
    if "mopeft" in methods:
        notes.insert(0, mopeft_note(directory))
    if "mopeft_logit" in methods:
        notes.insert(
            1,
            f"{labels['mopeft_logit']}: this project's addition, not the study's. MoPEFT (the study's "
            "gate) scales the prefix keys and values by G_P; MoPEFT-logit adds log G_P to the prefix "
            "logits instead, which can switch the prefix off (docs/methods.md). No study value exists.",
        )
    if beyond_in := [m for m in methods if m in beyond]:
        notes.insert(1 + ("mopeft_logit" in methods), beyond_note(beyond_in, labels, used))
    if "paxray4" in study:
        notes.append(
            "PAXRay-4: the mean of the four binary tasks' mIoUs, combined in the cell's metrics.json."
        )
    if extra:
        notes.append(outside_note(extra))
    if undefined := undefined_iou_note((c, labels[c.method]) for c in used):
        notes.append(undefined)
    return df, display, notes, used


def declared_peft_labels(config: str | Path | None) -> tuple[dict[str, str], list[str]]:
    """The run config's peft methods (name -> its ``label``, else its name, in declaration order)
    and its ``main.methods``; both empty without a config file. The one reader of these labels, for
    Tables 4.4/4.5 and the figures."""
    import yaml

    if config is None or not Path(config).is_file():
        return {}, []
    try:
        doc = yaml.safe_load(Path(config).read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"{config}: not a YAML config ({exc})") from None
    declared = doc.get("peft_methods") or {}
    labels = {name: str((entry or {}).get("label") or name) for name, entry in declared.items()}
    return labels, list((doc.get("main") or {}).get("methods") or [])


def beyond_methods(config: str | Path | None, cells: Iterable[Cell]) -> dict[str, str]:
    """Method -> label of the methods beyond the study a table shows: the run config's peft methods
    listed in ``main.methods`` (its order, its labels), then any other peft method among ``cells``
    (a table built by hand), by name."""
    declared, main_methods = declared_peft_labels(config)
    out = {name: declared[name] for name in main_methods if name in declared}
    for name in sorted({c.method for c in cells if is_peft_method(c.method)}):
        out.setdefault(name, name)
    return out


def beyond_note(methods: Sequence[str], labels: Mapping[str, str], cells: Iterable[Cell]) -> str:
    """What each column beyond the study is, from the options its cells were trained with."""
    options = {c.method: c.options for c in cells if c.method in methods}
    parts = []
    for m in methods:
        opts = options.get(m) or {}
        what = f"HF peft {opts.get('tuner', '?')}"
        if opts.get("peft_options") not in (None, "", "{}"):
            what += f" {opts['peft_options']}"
        targets = str(opts.get("target_modules", "?")).replace(",", ", ")
        parts.append(f"{labels[m]} = {what} on {targets}")
    return (
        f"{BEYOND_MARK} Beyond the study (config peft_methods; no study value): " + "; ".join(parts) + ". "
        "Each adapts those linear layers of every encoder block and trains the mask decoder, as the "
        "study's PEFT methods do (docs/methods.md)."
    )


def _mark_not_falling(
    display: pd.DataFrame, df: pd.DataFrame, flat: set[tuple[str, str]], labels: dict[str, str]
) -> pd.DataFrame:
    """Append the not-falling mark to the displayed value of every flagged (dataset, method)."""
    display = display.copy()
    for dataset, method in flat:
        column = labels.get(method, method)
        where = (df["dataset"] == dataset).to_numpy()
        if column in display and where.any():
            display.loc[where, column] = display.loc[where, column] + f" {curves.NOT_FALLING_MARK}"
    return display


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
    beyond = beyond_methods(args.config, cells) if spec.beyond else {}
    df, display, notes, used = main_table(
        cells,
        (*spec.methods, *beyond),
        getattr(args, "paper_dir", None),
        bootstrap,
        getattr(args, "losses", False),
        beyond=beyond,
    )
    prov = collect_provenance(args.config, [c.raw for c in used])
    write_table(df, args.out, spec.title, prov, notes, display=display)
