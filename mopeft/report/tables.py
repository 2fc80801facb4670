"""Table assembly: cell results beside the study's values, written as CSV, Markdown and LaTeX.

Why one module for reading cells, comparing and writing: every result table (4.3–4.8) follows the
same contract — our value (mean ± std over seeds), the study's value, and the difference — so the
builders only decide *which* cell goes in *which* column. The CSV keeps numbers machine-readable
(separate mean/std/n columns); Markdown and LaTeX carry the human form plus notes and provenance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tabulate import tabulate

from mopeft.data.folder.spec import DEFAULT_DOMAIN
from mopeft.errors import InputError
from mopeft.io import atomic_path, read_json, write_text
from mopeft.methods.registry import METHOD_SPECS
from mopeft.report.provenance import provenance_lines

MISSING = "–"

METHOD_LABELS: dict[str, str] = {name: spec.label for name, spec in METHOD_SPECS.items()}


# --------------------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cell:
    """One cell's combined ``metrics.json`` (the pipeline contract in docs/architecture.md)."""

    path: Path
    dataset: str
    method: str
    variant: str
    seed: int
    miou: float
    options: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.path.parent


def load_cell(path: str | os.PathLike[str]) -> Cell:
    """Read one cell's metrics.json; missing or malformed fields raise an error naming the file.

    A file under the pipeline's cell layout must say what its folders say: a LoRA metrics.json
    copied into a MoPEFT folder would otherwise fill the wrong column without a word.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object (a cell's metrics.json)")
    missing = [k for k in ("dataset", "method", "miou") if k not in data]
    if missing:
        raise InputError(f"{path}: missing key(s) {missing} (expected a cell's combined metrics.json)")
    try:
        miou = float(data["miou"])
    except (TypeError, ValueError):
        raise InputError(f"{path}: 'miou' is not a number ({data['miou']!r})") from None
    options = data.get("method_options") or {}
    if not isinstance(options, dict):
        raise InputError(f"{path}: 'method_options' must be an object")
    cell = Cell(
        path=path,
        dataset=str(data["dataset"]),
        method=str(data["method"]),
        variant=str(data.get("variant", "default")),
        seed=int(data.get("seed", 0)),
        miou=miou,
        options=dict(options),
        raw=data,
    )
    # The pipeline's layout: .../cells/<dataset>/<method>/<variant>/seed<seed>/metrics.json.
    parts = path.parts
    if len(parts) >= 6 and parts[-6] == "cells" and parts[-2].startswith("seed"):
        folder = dict(dataset=parts[-5], method=parts[-4], variant=parts[-3], seed=parts[-2][4:])
        says = dict(dataset=cell.dataset, method=cell.method, variant=cell.variant, seed=str(cell.seed))
        wrong = [f"{k} {says[k]!r} (folder: {folder[k]!r})" for k in folder if folder[k] != says[k]]
        if wrong:
            raise InputError(
                f"{path}: its content disagrees with its folder: {', '.join(wrong)}; it was copied or "
                "moved into the wrong cell: delete it and rerun that cell"
            )
    return cell


def load_cells(paths: Iterable[str | os.PathLike[str]]) -> list[Cell]:
    """Every cell once: the same file given twice, or two files for the same (dataset, method,
    variant, seed), would count one run as two seeds (``n=2``) or hide one behind the other."""
    cells: list[Cell] = []
    by_file: dict[Path, Path] = {}
    by_key: dict[tuple[str, str, str, int], Path] = {}
    for p in paths:
        cell = load_cell(p)
        real = cell.path.resolve()
        if real in by_file:
            raise InputError(f"{cell.path}: given twice (also as {by_file[real]}); pass each cell once")
        key = (cell.dataset, cell.method, cell.variant, cell.seed)
        if key in by_key:
            raise InputError(
                f"{cell.path} and {by_key[key]}: two results for the same cell (dataset {key[0]}, method "
                f"{key[1]}, variant {key[2]}, seed {key[3]}); keep one of them"
            )
        by_file[real], by_key[key] = cell.path, cell.path
        cells.append(cell)
    return cells


def add_outside_rows(rows: pd.DataFrame, cells: Iterable[Cell]) -> tuple[pd.DataFrame, list[str]]:
    """``rows`` (the study's datasets: domain, dataset, name) plus one row per dataset of ``cells``
    the study's table lacks (a folder dataset of the config), after them by domain and key, with
    the domain and name its cells record (default "Custom"). Returns the rows and the added keys."""
    known = set(rows["dataset"])
    extra: dict[str, tuple[str, str]] = {}
    for cell in cells:
        if cell.dataset not in known:
            extra.setdefault(
                cell.dataset,
                (str(cell.raw.get("domain") or DEFAULT_DOMAIN), str(cell.raw.get("name") or cell.dataset)),
            )
    if not extra:
        return rows, []
    ordered = sorted(extra.items(), key=lambda item: (item[1][0], item[0]))  # by domain, then key
    added = pd.DataFrame([{"domain": d, "dataset": k, "name": n} for k, (d, n) in ordered])
    return pd.concat([rows, added], ignore_index=True), [k for k, _ in ordered]


def outside_note(extra: Sequence[str]) -> str:
    return (
        f"Datasets outside the study's table ({', '.join(sorted(extra))}): no study value; they are "
        "averaged in their own domain's mean row and left out of the overall mean, which stays over "
        "the study's datasets."
    )


def _undefined_classes(cell: Cell) -> list[str]:
    """Classes of a cell whose IoU is None (or NaN): no pixel of the class in the test labels and
    none predicted. ``per_class_iou`` is a mapping (``task/class`` keys for a ``mean`` cell); a
    list is named by index."""
    per_class = cell.raw.get("per_class_iou") or {}
    items = per_class.items() if isinstance(per_class, dict) else enumerate(per_class)
    return [
        str(name)
        for name, value in items
        if value is None or (isinstance(value, float | int) and math.isnan(float(value)))
    ]


def undefined_iou_note(labelled: Iterable[tuple[Cell, str]]) -> str | None:
    """The note naming every (dataset, class, column) whose class IoU is None, or None if there is
    none. ``labelled``: each used cell with the label of the column it fills.

    Why a note: MESS's mIoU averages only the classes with an IoU, so such a cell's value is a mean
    over fewer classes than the dataset has, and a column that predicted the class somewhere scores
    0 on it instead: two columns of one row can average different classes. Without the note the
    table would show both as if alike (the metrics.json's ``null`` is the only trace).
    """
    pairs = list(labelled)
    several_seeds = len({c.seed for c, _ in pairs}) > 1
    columns: dict[str, list[str]] = {}  # dataset -> every column shown for it, in order
    names: dict[str, str] = {}
    missing: dict[str, dict[str, list[str]]] = {}  # dataset -> class -> columns without its IoU
    for cell, label in pairs:
        who = f"{label} seed {cell.seed}" if several_seeds else label
        columns.setdefault(cell.dataset, [])
        if who not in columns[cell.dataset]:
            columns[cell.dataset].append(who)
        names.setdefault(cell.dataset, str(cell.raw.get("name") or cell.dataset))
        for cls in _undefined_classes(cell):
            missing.setdefault(cell.dataset, {}).setdefault(cls, []).append(who)
    if not missing:
        return None
    parts, differ = [], False
    for dataset in sorted(missing):
        everyone = columns[dataset]
        groups: dict[tuple[str, ...], list[str]] = {}
        for cls, who in missing[dataset].items():
            groups.setdefault(tuple(w for w in everyone if w in who), []).append(cls)
        texts = []
        for who, classes in groups.items():
            whole = len(who) == len(everyone)
            differ |= not whole
            if whole:
                whom = f"all {len(everyone)} columns" if len(everyone) > 1 else who[0]
            else:
                whom = ", ".join(who)
            texts.append(f"{', '.join(classes)} ({whom})")
        name = names[dataset]
        parts.append(f"{name if name == dataset else f'{name} ({dataset})'}: {'; '.join(texts)}")
    text = (
        "No IoU for these classes (no pixel of the class in the test split's labels and none predicted; "
        "the cell's mIoU averages the dataset's other classes): " + ". ".join(parts) + "."
    )
    if differ:
        text += (
            " A column not named for a class predicted it somewhere and scores 0 on it, so the columns "
            "of those rows average different sets of classes."
        )
    return text


KFOLD_MARK = "†"
# A column of a method beyond the study (config peft_methods: an HF peft tuner). Not † (k-fold rows),
# ‡ (a loss that did not fall) or * (this project's MoPEFT variant), which the tables use already.
BEYOND_MARK = "§"


def flag_kfold(
    df: pd.DataFrame, display: pd.DataFrame, cells: Iterable[Cell]
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Mark datasets scored by k-fold over their test set (no labelled train split).

    Their numbers are not comparable one-to-one with a model trained on a separate train split, so
    the row says so: a ``train_protocol`` column in the CSV, a dagger on the name, and a note.
    """
    folds = {c.dataset: len(c.raw.get("units", {})) for c in cells if c.raw.get("combine") == "pool"}
    if not folds:
        return df, display, []
    df = df.copy()
    display = display.copy()
    df.insert(3, "train_protocol", [f"kfold-{folds[d]}" if d in folds else "" for d in df["dataset"]])
    marked = df["dataset"].isin(list(folds)).to_numpy()
    display.loc[marked, "Dataset"] = display.loc[marked, "Dataset"] + f" {KFOLD_MARK}"
    ks = ", ".join(f"{d}: k={k}" for d, k in sorted(folds.items()))
    note = (
        f"{KFOLD_MARK} No labelled train split: k-fold over the test set ({ks}); each test image is "
        "scored by a model that never saw it and the folds' confusion matrices are summed."
    )
    return df, display, [note]


# ---------------------------------------------------------------------------------------- comparison
def seed_stats(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 — NaN for one seed, n) of one cell's seeds."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if n > 1 else math.nan, n


def _r2(x: float) -> float:
    return math.nan if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 2)


def _fmt(x: float, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _fmt_ours(mean: float, std: float, n: int | None, multi: bool) -> str:
    """Our value as printed; ``n is None`` marks a mean row (an average of datasets, not of seeds)."""
    if math.isnan(mean) or n == 0:
        return MISSING
    if n is None:
        return f"{mean:.2f}"
    if multi and n > 1:
        return f"{mean:.2f} ± {std:.2f} (n={n})"
    if multi:
        return f"{mean:.2f} (n={n})"
    return f"{mean:.2f}"


def comparison_table(
    rows: pd.DataFrame,
    columns: Sequence[str],
    ours: Mapping[tuple[str, str], Sequence[float]],
    paper: Mapping[tuple[str, str], float],
    labels: Mapping[str, str] | None = None,
    means: bool = True,
    intervals: Mapping[tuple[str, str], tuple[float, float]] | None = None,
    overall: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Build the CSV frame, the display frame and explanatory notes of an ours-vs-study table.

    ``rows`` has columns ``domain``, ``dataset``, ``name`` in display order; ``ours[(dataset, column)]``
    lists the seeds' mIoUs; ``paper[(dataset, column)]`` is the study's value. Values are rounded to two
    decimals (the study's precision) and the difference is taken from the rounded mean, so the printed
    numbers subtract exactly. With several seeds anywhere in the table every column uses the
    ``M_mean, M_std, M_n`` layout, so the CSV schema does not depend on which cells happen to repeat.
    ``intervals[(dataset, column)]`` = a 95 % bootstrap interval of our value: CSV columns
    ``M_ci_low, M_ci_high``, and ``71.20 [68.10, 74.30]`` in Markdown/LaTeX.
    ``overall``: the datasets the overall mean row averages (default: every row); rows outside it
    (a folder dataset beside the study's) count only in their own domain's mean.
    """
    labels = dict(labels or {})
    intervals = dict(intervals or {})
    multi = any(len(v) > 1 for v in ours.values())
    records: list[dict[str, Any]] = []
    display: list[dict[str, str]] = []
    per_dataset_mean: dict[tuple[str, str], float] = {}

    def add_row(
        domain: str, dataset: str, name: str, cells: dict[str, tuple[float, float, int | None, float]]
    ) -> None:
        rec: dict[str, Any] = {"domain": domain, "dataset": dataset, "name": name}
        disp = {"Domain": domain, "Dataset": name}
        for col in columns:
            mean, std, n, ref = cells[col]
            mean_r, std_r, ref_r = _r2(mean), _r2(std), _r2(ref)
            diff = _r2(mean_r - ref_r) if not (math.isnan(mean_r) or math.isnan(ref_r)) else math.nan
            if multi:
                rec[f"{col}_mean"], rec[f"{col}_std"] = mean_r, std_r
                rec[f"{col}_n"] = n or math.nan
            else:
                rec[col] = mean_r
            low, high = intervals.get((dataset, col), (math.nan, math.nan))
            if intervals:
                rec[f"{col}_ci_low"], rec[f"{col}_ci_high"] = _r2(low), _r2(high)
            rec[f"{col}_paper"], rec[f"{col}_diff"] = ref_r, diff
            label = labels.get(col, col)
            disp[label] = _fmt_ours(mean_r, std_r, n, multi) + (
                f" [{low:.2f}, {high:.2f}]" if not math.isnan(low) else ""
            )
            disp[f"{label} (paper)"] = _fmt(ref_r)
            disp[f"{label} Δ"] = _fmt(diff, signed=True)
        records.append(rec)
        display.append(disp)

    for row in rows.itertuples(index=False):
        cells = {}
        for col in columns:
            mean, std, n = seed_stats(list(ours.get((row.dataset, col), [])))
            ref = paper.get((row.dataset, col), math.nan)
            ref = math.nan if ref is None or pd.isna(ref) else float(ref)
            cells[col] = (mean, std, n, ref)
            if n:
                per_dataset_mean[(row.dataset, col)] = mean
        add_row(row.domain, row.dataset, row.name, cells)

    notes: list[str] = []
    if means and per_dataset_mean:
        groups = [
            (d, rows.loc[rows["domain"] == d, "dataset"].tolist()) for d in dict.fromkeys(rows["domain"])
        ]
        overall_rows = rows["dataset"].tolist() if overall is None else list(overall)
        groups.append(("all", overall_rows))
        for domain, datasets in groups:
            cells = {}
            for col in columns:
                present = [d for d in datasets if (d, col) in per_dataset_mean]
                # Rounded per-dataset values are what the table shows; the mean is of those.
                vals = [_r2(per_dataset_mean[(d, col)]) for d in present]
                refs = [paper.get((d, col), math.nan) for d in present]
                refs = [float(r) for r in refs if r is not None and not pd.isna(r)]
                mean = float(np.mean(vals)) if vals else math.nan
                ref = float(np.mean(refs)) if refs and len(refs) == len(vals) else math.nan
                cells[col] = (mean, math.nan, None, ref)
            if any(not math.isnan(c[0]) for c in cells.values()):
                everything = "all datasets" if overall is None else "all study datasets"
                name = (
                    f"Mean ({everything} present)" if domain == "all" else f"Mean {domain} (datasets present)"
                )
                add_row(domain, "mean", name, cells)
        # Counted over the overall mean's datasets (the study's), the ones the denominator names.
        counts = {
            labels.get(c, c): sum(1 for d in overall_rows if (d, c) in per_dataset_mean) for c in columns
        }
        notes.append(
            "Mean rows average only the datasets for which we have a value (per column: "
            + ", ".join(f"{k} {v}/{len(overall_rows)}" for k, v in counts.items())
            + "); the study's mean in those rows is over the same datasets, so the difference is like "
            "for like."
        )
    if multi:
        notes.append(
            "Our values are mean ± sample standard deviation (ddof=1) over n seeds; "
            "the difference is taken from the mean."
        )
    if intervals:
        notes.append(
            "[low, high]: 95 % bootstrap interval of our mIoU over the test images (1,000 resamples; "
            "with several seeds a two-level bootstrap over seeds and images; docs/uncertainty.md). "
            "The study reports single runs without intervals."
        )
    notes.append(f"{MISSING}: no result (cell not run in this configuration, or no value in the study).")
    frame = pd.DataFrame.from_records(records)
    for col in columns:
        if f"{col}_n" in frame:
            frame[f"{col}_n"] = frame[f"{col}_n"].astype("Int64")  # counts stay integers beside empty cells
    return frame, pd.DataFrame.from_records(display), notes


# ------------------------------------------------------------------------------------------- writing
_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "|": r"\textbar{}",
}
_TEX_UNICODE = {
    "±": r"\ensuremath{\pm}",
    "Δ": r"\ensuremath{\Delta}",
    "–": "--",
    "×": r"\ensuremath{\times}",
    "≤": r"\ensuremath{\leq}",
    "≥": r"\ensuremath{\geq}",
    "−": "-",
    "τ": r"\ensuremath{\tau}",
    "—": "---",
    "§": r"\S{}",
}


def tex_escape(text: Any) -> str:
    """Escape LaTeX specials (and the few non-ASCII symbols the tables use) in one cell."""
    out = "".join(_TEX_SPECIALS.get(ch, ch) for ch in str(text))
    for k, v in _TEX_UNICODE.items():
        out = out.replace(k, v)
    return out


def _cell_text(value: Any) -> str:
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return MISSING
    if isinstance(value, float | np.floating):
        return f"{value:.2f}"
    return str(value)


def _is_numeric_column(values: Iterable[str]) -> bool:
    seen = False
    for v in values:
        if v == MISSING or v == "":
            continue
        seen = True
        if not (v[0].isdigit() or (v[0] in "+-" and len(v) > 1 and v[1].isdigit())):
            return False
    return seen


def _text_frame(df: pd.DataFrame) -> pd.DataFrame:
    return df.apply(lambda col: col.map(_cell_text)).astype(str) if len(df) else df.astype(str)


def md_cell(text: Any) -> str:
    """One Markdown table cell's text that cannot break its row.

    Why: a cell is free text from a user's config (a folder dataset's ``name``), and a pipe table
    row ends at a line break and splits at an unescaped ``|``. Line breaks become ``<br>``
    (GitHub renders them inside a cell); a backslash is doubled first, so a name ending in ``\\``
    cannot un-escape the pipe that follows it.
    """
    out = str(text).replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(part.strip() for part in out.splitlines())


def to_markdown(df: pd.DataFrame) -> str:
    """GitHub pipe table by tabulate (a runtime dependency: ``mopeft plan`` prints with it too),
    columns padded to one width so the .md reads as a table in a terminal as well; numbers
    right-aligned. Every cell and header goes through :func:`md_cell` first (tabulate escapes
    nothing), and tabulate is told to leave the already formatted strings alone (no number parsing).
    """
    text = _text_frame(df)
    align = ["right" if _is_numeric_column(text[c]) else "left" for c in df.columns]
    rows = [[md_cell(v) for v in r] for r in text.itertuples(index=False)]
    headers = [md_cell(c) for c in df.columns]
    return tabulate(rows, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def to_latex(df: pd.DataFrame, title: str, label: str, footer: Sequence[str]) -> str:
    """A booktabs tabular inside a floating table with caption; footer lines set small below it."""
    text = _text_frame(df)
    spec = "".join("r" if _is_numeric_column(text[c]) else "l" for c in df.columns)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{tex_escape(title)}}}",
        rf"\label{{tab:{label}}}",
        r"\resizebox{\textwidth}{!}{%",
        rf"\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(tex_escape(c) for c in df.columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(tex_escape(v) for v in row) + r" \\" for row in text.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}}"]
    if footer:
        lines.append(r"\par\smallskip\begin{minipage}{\textwidth}\footnotesize")
        lines += [tex_escape(f) + r"\par" for f in footer]
        lines.append(r"\end{minipage}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table(
    df: pd.DataFrame,
    out_stem: str | os.PathLike[str],
    title: str,
    provenance: Mapping[str, Any],
    notes: Sequence[str],
    *,
    display: pd.DataFrame | None = None,
) -> None:
    """Write ``out_stem``.csv (``df``), .md and .tex (``display`` if given, else ``df``), atomically.

    The Markdown has the title, the table, the notes and the provenance lines; the LaTeX puts the same
    notes and provenance under the tabular, so no copy of a table travels without its origin.
    """
    stem = Path(out_stem)
    shown = df if display is None else display
    prov = provenance_lines(provenance)
    with atomic_path(stem.with_name(stem.name + ".csv")) as tmp:
        df.to_csv(tmp, index=False)
    md = [f"# {title}", "", to_markdown(shown), ""]
    if notes:
        md += ["Notes:", "", *[f"- {n}" for n in notes], ""]
    md += ["Provenance:", "", *[f"- {p}" for p in prov], ""]
    write_text(stem.with_name(stem.name + ".md"), "\n".join(md))
    footer = [*notes, *[f"Provenance — {p}" for p in prov]]
    write_text(stem.with_name(stem.name + ".tex"), to_latex(shown, title, stem.name, footer))
