"""Training curves: every run's loss per step, per dataset and method, and which runs did not learn.

Why a figure and a flag: a table value means little if its training run never converged, and with
one number per cell nobody can tell. Each unit's live ``metrics.csv`` (one row per step, written as
training goes: :mod:`mopeft.train.metrics_log`) is read for every cell of the main tables, or, for
units trained before that file existed, its ``train_log.json`` (``losses``: one per step); the
figure shows them as small multiples (rows: datasets, columns: methods; every unit and seed one
line), and a run whose loss did not fall is named in a
note of Tables 4.3/4.4 and outlined in red in the figure.

"Did not fall" (:func:`loss_fell`): the mean loss of the last 10 % of steps is not at least 1 %
below the mean of the first 10 % (at least one step each). The margin keeps a run whose loss moved
by a rounding error (a frozen read-out on a many-class miniature) from counting as trained; a run
with a non-finite loss at any step diverged and did not fall either.
"""

from __future__ import annotations

import argparse
import math
import os
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mopeft.errors import InputError, MissingInput
from mopeft.io import atomic_path, read_json
from mopeft.report.figure_files import method_labels, save_png_pdf
from mopeft.report.tables import METHOD_LABELS, Cell, load_cells
from mopeft.train.metrics_log import METRICS_FILE, read_metrics

WINDOW = 0.10  # the first / last fraction of the steps compared
MIN_DROP = 0.01  # the last window's mean must be this fraction below the first's
NOT_FALLING_MARK = "‡"


@dataclass(frozen=True)
class Run:
    """One training run: a unit of a cell, with its per-step losses."""

    dataset: str
    method: str
    variant: str
    seed: int
    unit: str
    losses: tuple[float, ...]
    path: Path
    steps: tuple[int, ...] | None = None  # each loss's step (1-based); None: 1..len(losses)

    @property
    def step_numbers(self) -> tuple[int, ...]:
        return self.steps if self.steps is not None else tuple(range(1, len(self.losses) + 1))

    @property
    def label(self) -> str:
        unit = "" if self.unit == "main" else f" {self.unit}"
        return f"{self.dataset}/{self.method} seed {self.seed}{unit}"


def window_means(losses: Sequence[float]) -> tuple[float, float]:
    """Mean loss of the first and of the last ``WINDOW`` of the steps (at least one step each)."""
    if not losses:
        return math.nan, math.nan
    n = max(1, math.ceil(WINDOW * len(losses)))
    return float(np.mean(losses[:n])), float(np.mean(losses[-n:]))


def loss_fell(losses: Sequence[float]) -> bool:
    """Did the loss fall by the end? (Last window's mean ≥ 1 % below the first's; a run with a
    non-finite loss at any step diverged: no.)"""
    if not len(losses) or not np.isfinite(np.asarray(losses, dtype=float)).all():
        return False
    first, last = window_means(losses)
    return bool(last < (1 - MIN_DROP) * first)


def _metrics_csv_losses(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
    """Steps and losses of a unit's ``metrics.csv``, or None if it has no loss rows (then the
    caller falls back to ``train_log.json``)."""
    rows = [r for r in read_metrics(path) if r["loss"] is not None]
    if not rows:
        return None
    return tuple(int(r["step"] or 0) for r in rows), tuple(float(r["loss"] or 0.0) for r in rows)


def cell_runs(cell: Cell) -> list[Run]:
    """The runs of a cell, from ``units/<unit>/metrics.csv`` beside its metrics.json where the unit
    has one (the live per-step log), else from ``units/<unit>/train_log.json``."""
    units = cell.raw.get("units") or {}
    if not units:
        raise InputError(f"{cell.path}: no 'units' (expected a combined cell metrics.json)")
    runs = []
    for unit in units:
        live = cell.folder / "units" / unit / METRICS_FILE
        got = _metrics_csv_losses(live) if live.is_file() else None
        if got is not None:
            steps, losses = got
            runs.append(Run(cell.dataset, cell.method, cell.variant, cell.seed, unit, losses, live, steps))
            continue
        path = cell.folder / "units" / unit / "train_log.json"
        try:
            log = read_json(path)
        except FileNotFoundError:
            raise MissingInput(f"{path}: train log of unit {unit!r} of {cell.path} not found") from None
        losses = log.get("losses") if isinstance(log, dict) else None
        if not isinstance(losses, list) or not losses:
            raise InputError(f"{path}: no 'losses' list (expected mopeft train's train_log.json)")
        runs.append(
            Run(cell.dataset, cell.method, cell.variant, cell.seed, unit, tuple(map(float, losses)), path)
        )
    return runs


def runs_of(cells: Iterable[Cell]) -> list[Run]:
    return [r for c in cells for r in cell_runs(c)]


def not_falling(runs: Iterable[Run]) -> list[Run]:
    return [r for r in runs if not loss_fell(r.losses)]


def definition() -> str:
    return (
        f"mean loss of the last {WINDOW:.0%} of steps not at least {MIN_DROP:.0%} below that of the "
        f"first {WINDOW:.0%}"
    )


def loss_note(runs: Sequence[Run]) -> str:
    """The table note: which runs did not fall (with their window means), or that all did."""
    flat = not_falling(runs)
    if not flat:
        return f"Training loss fell in all {len(runs)} training runs of this table ({definition()}: none)."
    shown = "; ".join(f"{r.label} ({' → '.join(f'{m:.3f}' for m in window_means(r.losses))})" for r in flat)
    return (
        f"{NOT_FALLING_MARK} Training loss did not fall in {len(flat)} of {len(runs)} runs ({definition()}; "
        f"figures/training_curves): {shown}. Their values say little about the method."
    )


def flat_cells(runs: Iterable[Run]) -> set[tuple[str, str]]:
    """(dataset, method) of the cells with at least one run whose loss did not fall."""
    return {(r.dataset, r.method) for r in not_falling(runs)}


# ------------------------------------------------------------------------------------------ figure
def curves_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Long frame: dataset, method, variant, seed, unit, step (1-based), loss (the figure's data)."""
    rows = [
        {
            "dataset": r.dataset,
            "method": r.method,
            "variant": r.variant,
            "seed": r.seed,
            "unit": r.unit,
            "step": step,
            "loss": loss,
        }
        for r in runs
        for step, loss in zip(r.step_numbers, r.losses, strict=True)
    ]
    return pd.DataFrame(rows)


def summary_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run: its first- and last-window means and whether the loss fell."""
    rows = []
    for r in runs:
        first, last = window_means(r.losses)
        rows.append(
            {
                "dataset": r.dataset,
                "method": r.method,
                "variant": r.variant,
                "seed": r.seed,
                "unit": r.unit,
                "steps": len(r.losses),
                "loss_first": round(first, 4),
                "loss_last": round(last, 4),
                "fell": loss_fell(r.losses),
            }
        )
    return pd.DataFrame(rows)


LOSS_LABEL = "training loss (the config's loss, per step)"


def _line_key(run: Run, several_seeds: bool) -> str:
    """A line's legend entry: its unit (``main``, a k-fold fold, a task), and seed if several."""
    return f"{run.unit} seed {run.seed}" if several_seeds else run.unit


def training_curves_figure(
    runs: Sequence[Run], title: str = "", labels: Mapping[str, str] | None = None
) -> Any:
    """The open matplotlib figure of :func:`plot_training_curves` (tests inspect its labels).
    ``labels``: column title per method (:func:`method_labels`; the study's label by default).

    A line's colour is its unit (and seed, when there are several) across the whole figure, named
    in one legend under the panels: a k-fold dataset's panel holds one line per fold, and without
    the legend nothing said which is which, nor that two lines are not two methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    datasets = list(dict.fromkeys(r.dataset for r in runs))
    methods = list(dict.fromkeys(r.method for r in runs))
    several_seeds = len({r.seed for r in runs}) > 1
    keys = list(dict.fromkeys(_line_key(r, several_seeds) for r in runs))
    flat = flat_cells(runs)
    fig, axes = plt.subplots(
        len(datasets),
        len(methods),
        figsize=(1.9 * len(methods) + 0.9, 1.35 * len(datasets) + 1.3),
        sharex=True,
        sharey="row",
        squeeze=False,
        layout="constrained",
    )
    colours = plt.get_cmap("tab10")
    colour = {key: colours(k % 10) for k, key in enumerate(keys)}
    for i, dataset in enumerate(datasets):
        for j, method in enumerate(methods):
            ax = axes[i][j]
            mine = [r for r in runs if r.dataset == dataset and r.method == method]
            for run in mine:
                line_colour = colour[_line_key(run, several_seeds)]
                ax.plot(run.step_numbers, run.losses, lw=0.9, color=line_colour, alpha=0.85)
            ax.tick_params(labelsize=6)
            if i == 0:
                ax.set_title((labels or {}).get(method) or METHOD_LABELS.get(method, method), fontsize=8)
            if j == 0:
                ax.set_ylabel(dataset, fontsize=7)
            if i == len(datasets) - 1:
                ax.set_xlabel("step", fontsize=7)
            if not mine:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=6, transform=ax.transAxes)
            elif (dataset, method) in flat:
                for side in ax.spines.values():
                    side.set_color("red")
                    side.set_linewidth(1.6)
                ax.text(
                    0.97,
                    0.06,
                    f"{NOT_FALLING_MARK} not falling",
                    ha="right",
                    va="bottom",
                    fontsize=6,
                    color="red",
                    transform=ax.transAxes,
                )
    fig.suptitle(title or "Training loss per step (one line per unit and seed)", fontsize=10)
    # Rows are datasets (each row's own y scale); the quantity is said once for the whole figure.
    fig.supylabel(LOSS_LABEL, fontsize=8)
    handles: list[Any] = [Line2D([], [], color=colour[k], lw=1.2, label=k) for k in keys]
    if flat:
        wrapped = textwrap.fill(f"loss did not fall ({definition()})", 44)
        label = f"{NOT_FALLING_MARK} {wrapped}"
        handles.append(Patch(facecolor="none", edgecolor="red", lw=1.6, label=label))
    fig.legend(
        handles=handles,
        title="line colour: unit (k-fold: one per fold)",
        loc="outside lower center",
        ncols=min(len(handles), 6),
        fontsize=7,
        title_fontsize=7,
        frameon=False,
    )
    return fig


def plot_training_curves(
    runs: Sequence[Run],
    out_stem: str | os.PathLike[str],
    title: str = "",
    labels: Mapping[str, str] | None = None,
) -> None:
    """Small multiples: a row per dataset, a column per method, a line per unit and seed; the
    panels of runs whose loss did not fall are outlined in red and say so."""
    save_png_pdf(training_curves_figure(runs, title, labels), out_stem, dpi=110)


def write_training_curves(
    cell_paths: Iterable[str | os.PathLike[str]],
    out_stem: str | os.PathLike[str],
    config: str | os.PathLike[str] | None = None,
) -> Any:
    """Figure (PNG + PDF), the losses as CSV (``out_stem``.csv) and one row per run
    (``out_stem``_summary.csv) for the default cells among ``cell_paths``."""
    cells = [c for c in load_cells(cell_paths) if c.variant == "default"]
    if not cells:
        raise InputError("no default cells among the inputs: the training-curve figure needs main cells")
    runs = runs_of(cells)
    stem = Path(out_stem)
    with atomic_path(stem.with_name(stem.name + ".csv")) as tmp:
        curves_frame(runs).to_csv(tmp, index=False)
    summary = summary_frame(runs)
    with atomic_path(stem.with_name(stem.name + "_summary.csv")) as tmp:
        summary.to_csv(tmp, index=False)
    plot_training_curves(runs, stem, labels=method_labels(config, cells))
    return summary


def build_training_curves(args: argparse.Namespace) -> Any:
    return write_training_curves(args.cells, args.out, getattr(args, "config", None))
