"""Table A.1: per-class AP on FAIR-1M for baseline, prompt tuning, prefix tuning and LoRA.

Inputs are ``mopeft score-detections`` JSONs (one per method and seed); the method is the JSON's
``method`` field (``--method``). Several files of one method (seeds) are averaged per class.
The study's names map to ours: Prompt Tuning = ``vpt``, Prefix Tuning = ``vpt_deep``.
Its category means are compared as printed; its overall mAP is not printed, so the study column of
the mAP row is the mean of its 34 per-class values (said in the notes). Inconsistencies inside the
study's table (a printed category mean that is not the mean of its printed classes) are detected
from the CSVs and listed in the notes, never hard-coded.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mopeft.detection import CATEGORIES, canonical_class
from mopeft.errors import InputError
from mopeft.io import read_json

# our method key -> (the study's CSV column, display label)
METHODS: dict[str, tuple[str, str]] = {
    "baseline": ("baseline", "Baseline"),
    "vpt": ("prompt_tuning", "Prompt Tuning"),
    "vpt_deep": ("prefix_tuning", "Prefix Tuning"),
    "lora": ("lora", "LoRA"),
}


def method_of(path: Path, data: dict[str, Any]) -> str:
    """Method key of one AP file: its ``method`` field (written by ``score-detections --method``)."""
    method = data.get("method")
    if method not in METHODS:
        raise InputError(f"{path}: 'method' is {method!r}; Table A.1 shows {', '.join(METHODS)}")
    return str(method)


def load_ap_files(files: Iterable[str | Path]) -> dict[str, list[dict[str, float | None]]]:
    """method -> list of {class: AP%} (one per file), validating names so typos cannot vanish."""
    out: dict[str, list[dict[str, float | None]]] = defaultdict(list)
    for f in files:
        f = Path(f)
        data = read_json(f)
        if not isinstance(data, dict) or not isinstance(data.get("per_class_ap"), dict):
            raise InputError(f"{f}: not a score-detections result (no per_class_ap)")
        aps: dict[str, float | None] = {}
        for name, value in data["per_class_ap"].items():
            cls = canonical_class(name)
            if cls is None:
                raise InputError(f"{f}: unknown FAIR-1M class {name!r}")
            aps[cls] = None if value is None else float(value)
        out[method_of(f, data)].append(aps)
    return dict(out)


def _mean(values: Iterable[float | None]) -> float:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def study_values(paper_dir: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's per-class table (class names mapped to FAIR-1M XML spelling) and category means."""
    from mopeft.report import paper

    per_class = paper.load_paper_csv("fair1m_map", paper_dir)
    cats = paper.load_paper_csv("fair1m_category_means", paper_dir)
    per_class = per_class.copy()
    names = [canonical_class(c) for c in per_class["class"]]
    if None in names:
        bad = [c for c, n in zip(per_class["class"], names, strict=True) if n is None]
        raise InputError(f"fair1m_map.csv: unknown class name(s) {bad}")
    per_class["class"] = names
    return per_class, cats.set_index("category")


def study_inconsistencies(per_class: pd.DataFrame, cats: pd.DataFrame, tol: float = 0.0051) -> list[str]:
    """Printed category means that differ from the mean of the printed per-class values by more than
    rounding to 2 decimals can explain."""
    notes = []
    for col, label in METHODS.values():
        for cat, grp in per_class.groupby("category", sort=False):
            computed, printed = float(grp[col].mean()), float(cats.loc[cat, col])
            if abs(computed - printed) > tol:
                notes.append(
                    f"The study prints {printed:.2f} as the {label} {cat} mean, but its {len(grp)} "
                    f"per-class values average {computed:.2f}; the Diff. column uses the printed value."
                )
    return notes


def assemble(
    ap_files: Sequence[str | Path], paper_dir: str | Path | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Numeric Table A.1: one row per class, category mean and mAP; ours / study / diff per method."""
    ours = load_ap_files(ap_files)
    unknown = sorted(set(ours) - set(METHODS))
    per_class, cats = study_values(paper_dir)
    rows: list[dict[str, Any]] = []

    def per_run(method: str, classes: Sequence[str]) -> list[float]:
        """Each seed's mean AP over ``classes`` (classes without GT in that run are left out)."""
        vals = [_mean(run.get(c) for c in classes) for run in ours.get(method, [])]
        return [v for v in vals if not math.isnan(v)]

    def add(kind: str, category: str, name: str, classes: Sequence[str], study_of: Any) -> None:
        row: dict[str, Any] = {"row": kind, "category": category, "class": name}
        for method, (col, _) in METHODS.items():
            runs = per_run(method, classes)
            o = float(np.mean(runs)) if runs else math.nan
            s = study_of(col) if col is not None else math.nan
            row[f"{method}_ours"] = o
            row[f"{method}_std"] = float(np.std(runs, ddof=1)) if len(runs) > 1 else math.nan
            row[f"{method}_n"] = len(runs)
            row[f"{method}_study"] = s
            # From the rounded values, so the printed numbers subtract exactly.
            row[f"{method}_diff"] = (
                round(round(o, 2) - round(s, 2), 2) if not (math.isnan(o) or math.isnan(s)) else math.nan
            )
        rows.append(row)

    study = per_class.set_index("class")
    for cat in CATEGORIES:
        for cls in per_class.loc[per_class["category"] == cat, "class"]:
            add("class", cat, cls, [cls], lambda col, cls=cls: float(study.loc[cls, col]))
    for cat in CATEGORIES:
        classes = list(per_class.loc[per_class["category"] == cat, "class"])
        add("category mean", cat, "", classes, lambda col, cat=cat: float(cats.loc[cat, col]))
    add("mAP (34 classes)", "", "", list(study.index), lambda col: float(per_class[col].mean()))
    all37 = [c for names in CATEGORIES.values() for c in names]
    add("mAP (37 classes)", "", "", all37, lambda col: math.nan)
    df = pd.DataFrame(rows)
    notes = [
        "AP: DOTA-style VOC AP on oriented boxes at IoU >= 0.5, all-point interpolation, in percent.",
        "Prompt Tuning = vpt (shallow VPT), Prefix Tuning = vpt_deep. Ours = mean over seeds (± sample std, "
        "n seeds, where several); mean rows average each seed's classes first.",
        "Table A.1 lists 34 classes: the three other-* classes are left out of its rows and category "
        "means; 'mAP (37 classes)' includes them (ours only).",
        "The study prints no overall mAP; its value in the 'mAP (34 classes)' row is the mean of its 34 "
        "per-class values.",
        "Classes without GT in our test split have no AP (–) and are left out of every mean.",
        *study_inconsistencies(per_class, cats),
    ]
    if unknown:
        notes.append(f"AP files of methods not in Table A.1 were ignored: {', '.join(unknown)}.")
    return df, notes


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Human form: one 'Ours / Study / Diff.' triple per method, 2 decimals, '–' for missing."""
    from mopeft.report.tables import MISSING

    def fmt(x: float, signed: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return MISSING
        return f"{x:+.2f}" if signed else f"{x:.2f}"

    out = pd.DataFrame(
        {
            "Category": df["category"],
            "Class": [c if r == "class" else r for c, r in zip(df["class"], df["row"], strict=True)],
        }
    )
    multi = any((df[f"{m}_n"] > 1).any() for m in METHODS)
    for m, (_, label) in METHODS.items():
        if multi:
            out[f"{label} (ours)"] = [
                fmt(v) if n < 2 else f"{v:.2f} ± {sd:.2f} (n={n})"
                for v, sd, n in zip(df[f"{m}_ours"], df[f"{m}_std"], df[f"{m}_n"], strict=True)
            ]
        else:
            out[f"{label} (ours)"] = [fmt(v) for v in df[f"{m}_ours"]]
        out[f"{label} (study)"] = [fmt(v) for v in df[f"{m}_study"]]
        out[f"{label} Diff."] = [fmt(v, signed=True) for v in df[f"{m}_diff"]]
    return out


def build(args: argparse.Namespace) -> None:
    """``mopeft table a1 --cells <score-detections JSONs> --config CFG --out STEM``."""
    from mopeft.report.provenance import collect_provenance
    from mopeft.report.registry import table_spec
    from mopeft.report.tables import write_table

    files = [Path(f) for f in args.cells]
    if not files:
        raise InputError("table a1 needs --cells: score-detections JSON files of the FAIR-1M cells")
    df, notes = assemble(files, getattr(args, "paper_dir", None))
    prov = collect_provenance(args.config, [read_json(f) for f in files])
    write_table(df, args.out, table_spec("a1").title, prov, notes, display=display_frame(df))
