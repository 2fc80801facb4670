"""docs/demo.md's numbers, rendered from a finished demo run's tables (``make demo-doc``).

Why generated and not typed: the demo's numbers are deterministic on one machine but another CPU's
float kernels round differently, so a rerun elsewhere differs in the last digits, and once a
sentence like "every method beats the baseline" was typed from one run's mean it outlived the
per-dataset numbers that contradict it. Here every number and every "above / below the baseline"
statement is computed from ``results/<run>/tables/table_4_3.csv`` and ``table_4_4.csv`` (and the
training-curve summary), and written between two markers of docs/demo.md, so the page and a run's
tables cannot disagree.

Comparisons use the values as the tables print them (two decimals): a method is "above" the
baseline when its printed value is larger, "level" when equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from mopeft.errors import MissingInput
from mopeft.report.tables import METHOD_LABELS

BEGIN = "<!-- demo:tables -->"
END = "<!-- /demo:tables -->"
BASELINE = "baseline"
DECODER_ONLY = "decoder_ft"
TABLES = ("table_4_3.csv", "table_4_4.csv")  # Tables 4.3 and 4.4: every main method's column
CURVES = "figures/training_curves_summary.csv"
PAIRED = "mopeft_vs_best_single"


@dataclass(frozen=True)
class Dataset:
    """One row of the demo's main tables: key, printed name, and whether the study has it."""

    key: str
    name: str
    study: bool  # has a study value (a folder dataset of the config has none)
    kfold: str = ""  # "kfold-2" for a dataset without a train split


@dataclass
class DemoResults:
    """What docs/demo.md reports of one demo run, read from its tables (see :func:`load_results`)."""

    methods: list[str]  # main methods, baseline first, in the tables' column order
    datasets: list[Dataset]
    values: dict[tuple[str, str], float]  # (dataset, method) -> mIoU as printed (two decimals)
    means: dict[str, float]  # method -> the tables' overall mean row (the study's datasets)
    paired: dict[str, tuple[str, float, float, float]] = field(default_factory=dict)  # best, diff, lo, hi
    flat: list[tuple[str, str, str, float, float]] = field(default_factory=list)  # runs whose loss stayed
    commit: str = "unknown"


def _method_columns(frame: pd.DataFrame) -> list[str]:
    """The method columns of a comparison table's CSV: every ``<m>_paper`` has its ``<m>``."""
    return [c[: -len("_paper")] for c in frame.columns if c.endswith("_paper")]


def _value_column(frame: pd.DataFrame, method: str) -> str:
    """``<m>`` for one seed; ``<m>_mean`` when the run had several seeds (the CSV's layout then)."""
    return method if method in frame.columns else f"{method}_mean"


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number


def _commit(tables_dir: Path) -> str:
    """The ``Git commit:`` provenance line of Table 4.4's Markdown, as written by the run."""
    md = tables_dir / "table_4_4.md"
    if md.is_file():
        for line in md.read_text().splitlines():
            if line.startswith("- Git commit: "):
                commit, _, dirty = line[len("- Git commit: ") :].strip().partition(" ")
                return commit[:12] + (", dirty working tree" if "dirty" in dirty else "")
    return "unknown"


def load_results(run_dir: str | Path) -> DemoResults:
    """Read ``run_dir``/tables/table_4_3.csv and table_4_4.csv (and the training-curve summary,
    if present). Raises naming the missing file when the run has not finished its tables."""
    run_dir = Path(run_dir)
    frames = []
    for name in TABLES:
        path = run_dir / "tables" / name
        if not path.is_file():
            raise MissingInput(f"{path}: not found (run `make demo` first)")
        frames.append(pd.read_csv(path))
    methods: list[str] = []
    values: dict[tuple[str, str], float] = {}
    means: dict[str, float] = {}
    rows: dict[str, Dataset] = {}
    paired: dict[str, tuple[str, float, float, float]] = {}
    for frame in frames:
        columns = _method_columns(frame)
        # Table 4.3's own columns, then Table 4.4's order (MoPEFT sits among the PEFT methods there).
        methods = [m for m in methods if m not in columns] + columns
        for rec in frame.to_dict("records"):
            key = str(rec["dataset"])
            if key == "mean":
                if rec["domain"] == "all":
                    means |= {m: _number(rec[_value_column(frame, m)]) for m in columns}
                continue
            mine = {m: _number(rec[_value_column(frame, m)]) for m in columns}
            if all(math.isnan(v) for v in mine.values()):
                continue  # a study dataset the demo did not run
            study = any(not math.isnan(_number(rec[f"{m}_paper"])) for m in columns)
            kfold = rec.get("train_protocol")
            rows.setdefault(
                key, Dataset(key, str(rec["name"]), study, kfold if isinstance(kfold, str) else "")
            )
            values |= {(key, m): v for m, v in mine.items() if not math.isnan(v)}
            best = rec.get(PAIRED)
            if isinstance(best, str) and best:
                paired[key] = (
                    best,
                    _number(rec[f"{PAIRED}_diff"]),
                    _number(rec[f"{PAIRED}_low"]),
                    _number(rec[f"{PAIRED}_high"]),
                )
    if BASELINE in methods:  # the frozen baseline first: everything is compared with it
        methods.remove(BASELINE)
        methods.insert(0, BASELINE)
    flat = []
    curves = run_dir / CURVES
    if curves.is_file():
        summary = pd.read_csv(curves)
        for rec in summary[summary["variant"] == "default"].to_dict("records"):
            if not bool(rec["fell"]):
                flat.append(
                    (
                        str(rec["dataset"]),
                        str(rec["method"]),
                        str(rec["unit"]),
                        rec["loss_first"],
                        rec["loss_last"],
                    )
                )
    return DemoResults(methods, list(rows.values()), values, means, paired, flat, _commit(run_dir / "tables"))


# ---------------------------------------------------------------------------------------- rendering
def _label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _name(dataset: Dataset) -> str:
    k = dataset.kfold.removeprefix("kfold-")
    return f"{dataset.name} (k-fold, k={k})" if dataset.kfold else dataset.name


def _listing(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def compare(values: Mapping[str, float], reference: str) -> tuple[list[str], list[str], list[str]]:
    """(above, level, below) ``reference`` among the other methods of ``values`` (printed values)."""
    ref = values[reference]
    above = [m for m, v in values.items() if m != reference and v > ref]
    level = [m for m, v in values.items() if m != reference and v == ref]
    below = [m for m, v in values.items() if m != reference and v < ref]
    return above, level, below


def _against(values: Mapping[str, float], reference: str, what: str) -> str:
    """ "5 of 7 methods above the baseline (0.97); below: decoderFT 0.90, VPT 0.87" (or "all 7 ...",
    or "none of the 7 ...; the best: ...")."""
    above, level, below = compare(values, reference)
    n = len(above) + len(level) + len(below)
    ref = f"{what} ({values[reference]:.2f})"
    if len(above) == n:
        return f"all {n} methods above {ref}"
    if not above:
        top = max(v for m, v in values.items() if m != reference)
        best = ", ".join(f"{_label(m)} {v:.2f}" for m, v in values.items() if m != reference and v == top)
        text = f"none of the {n} methods above {ref}; the best: {best}"
    else:
        text = f"{len(above)} of {n} methods above {ref}"
        if below:
            text += "; below: " + ", ".join(f"{_label(m)} {values[m]:.2f}" for m in below)
    if level:
        text += "; level with it: " + ", ".join(f"{_label(m)} {values[m]:.2f}" for m in level)
    return text


def _excludes_zero(low: float, high: float) -> str:
    return " (excludes 0)" if low > 0 or high < 0 else ""


def render(results: DemoResults, source: str = "results/demo") -> str:
    """The Markdown between docs/demo.md's markers (markers included)."""
    methods = results.methods
    labels = [_label(m) for m in methods]
    study = [d for d in results.datasets if d.study]
    out = [
        BEGIN,
        f"<!-- generated by `make demo-doc` (scripts/update_demo_doc.py) from {source}/tables/"
        f"{{{','.join(TABLES)}}}: do not edit by hand -->",
        "",
        f"One run of `make demo` (git commit {results.commit}); a rerun on another CPU can differ in the "
        "last digits, and so can which method is ahead where two values are that close.",
        "",
        f"Mean mIoU over the {len(study)} study datasets of the demo ({_listing([d.name for d in study])}; "
        'the tables\' row "Mean (all study datasets present)"):',
        "",
        "| " + " | ".join(labels) + " |",
        "|" + "---:|" * len(labels),
        "| " + " | ".join(f"{results.means[m]:.2f}" for m in methods) + " |",
        "",
        "Per dataset (mIoU; ▲ above, ▼ below the frozen baseline of its row):",
        "",
        "| dataset | " + " | ".join(labels) + " | above the baseline |",
        "|:---|" + "---:|" * (len(labels) + 1),
    ]
    per_dataset: dict[str, dict[str, float]] = {}
    for d in results.datasets:
        row = {m: results.values[(d.key, m)] for m in methods if (d.key, m) in results.values}
        per_dataset[d.key] = row
        base = row.get(BASELINE)
        cells = []
        for m in methods:
            if m not in row:
                cells.append("–")
                continue
            mark = (
                ""
                if m == BASELINE or base is None
                else (" ▲" if row[m] > base else " ▼" if row[m] < base else "")
            )
            cells.append(f"{row[m]:.2f}{mark}")
        count = "–" if base is None else f"{len(compare(row, BASELINE)[0])} of {len(row) - 1}"
        out.append(f"| {_name(d)} | " + " | ".join(cells) + f" | {count} |")
    out += ["", "What these numbers say, computed from them:", ""]
    means = {m: v for m, v in results.means.items() if not math.isnan(v)}
    if BASELINE in means:
        out.append(f"- **Mean over the study datasets**: {_against(means, BASELINE, 'the frozen baseline')}.")
    for d in results.datasets:
        row = per_dataset[d.key]
        if BASELINE in row:
            out.append(f"- **{_name(d)}**: {_against(row, BASELINE, 'the baseline')}.")
    ranked = [d for d in results.datasets if BASELINE in per_dataset[d.key]]
    wins = []
    for m in methods[1:]:
        beaten = [
            d
            for d in ranked
            if m in per_dataset[d.key] and per_dataset[d.key][m] > per_dataset[d.key][BASELINE]
        ]
        scored = [d for d in ranked if m in per_dataset[d.key]]
        wins.append(f"{_label(m)} {len(beaten)} of {len(scored)}")
    out.append("- **Datasets on which each method is above the baseline**: " + ", ".join(wins) + ".")
    if DECODER_ONLY in means:
        encoder = {m: v for m, v in means.items() if m != BASELINE}
        above, level, below = compare(encoder, DECODER_ONLY)
        text = (
            f"- **Adapting the encoder vs decoder-only fine-tuning** (mean): {len(above)} of "
            f"{len(encoder) - 1} encoder methods above {_label(DECODER_ONLY)} ({encoder[DECODER_ONLY]:.2f})"
        )
        if below or level:
            text += "; not above it: " + ", ".join(f"{_label(m)} {encoder[m]:.2f}" for m in [*level, *below])
        out.append(text + ".")
    if results.paired:
        shown = [
            f"{_name(d)} {diff:+.2f} [{low:+.2f}, {high:+.2f}]{_excludes_zero(low, high)} vs {_label(best)}"
            for d in results.datasets
            if d.key in results.paired
            for best, diff, low, high in [results.paired[d.key]]
        ]
        out.append(
            f"- **{_label('mopeft')} − the best single PEFT method** (Table 4.4; 95 % paired bootstrap "
            "interval over the test images): " + "; ".join(shown) + "."
        )
    if results.flat:
        runs = [f"{ds}/{m} {unit} ({first:.3f} → {last:.3f})" for ds, m, unit, first, last in results.flat]
        out.append(
            f"- **Training loss did not fall** ({len(runs)} run{'s' if len(runs) != 1 else ''}; "
            "figures/training_curves_summary.csv, first → last 10 % of steps): " + "; ".join(runs) + "."
        )
    else:
        out.append("- **Training loss fell** in every main run (figures/training_curves_summary.csv).")
    out.append(END)
    return "\n".join(out)


def replace_block(text: str, block: str) -> str:
    """``text`` with the part from BEGIN to END (markers included) replaced by ``block``; exactly
    one pair of markers must be there, in that order, or nothing is written."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"expected exactly one {BEGIN} ... {END} block")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + block + text[end:]
