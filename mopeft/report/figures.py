"""Fig. 4.2: how often each PEFT module of MoPEFT is "called" at inference, from recorded gates.

The thesis gives no counting rule (docs/methods.md), so the raw per-image, per-layer gates are kept
and two rules are applied: (1) threshold — a module counts as called in a layer for an image when its
gate exceeds 0.5, the sigmoid midpoint; (2) argmax — per (image, layer) the module with the largest
gate is "selected", so the counts sum to images × layers. LoRA's gate is the mean of its q and v
gates. Panel (b) shows the mean gate per layer so the per-layer pattern behind the counts is visible.
The counts are also written as CSV beside the figure, so they can be checked without reading a plot.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mopeft.errors import InputError, MissingInput
from mopeft.io import atomic_path
from mopeft.report.figure_files import save_png_pdf
from mopeft.report.tables import Cell, load_cells

GATE_KEYS = ("lora_q", "lora_v", "prefix", "adapter")
MODULES = ("LoRA", "Prefix", "Adapter")
THRESHOLD = 0.5


def load_gates(cell: Cell) -> dict[str, np.ndarray]:
    """Module -> (images, layers) gates of a cell, all its units' gates.npz concatenated over images."""
    paths = cell.raw.get("gates") or []
    if isinstance(paths, str):
        paths = [paths]
    if not paths:
        raise InputError(f"{cell.path}: no 'gates' paths (only MoPEFT cells record gates)")
    parts: dict[str, list[np.ndarray]] = {m: [] for m in MODULES}
    layers: int | None = None
    for rel in paths:
        path = cell.folder / rel
        try:
            with np.load(path) as npz:
                missing = [k for k in GATE_KEYS if k not in npz.files]
                if missing:
                    raise InputError(f"{path}: missing gate array(s) {missing}")
                arrays = {k: np.asarray(npz[k], dtype=float) for k in GATE_KEYS}
        except FileNotFoundError:
            raise MissingInput(f"{path}: gates file not found (listed in {cell.path})") from None
        shapes = {a.shape for a in arrays.values()}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise InputError(
                f"{path}: gate arrays must share one (images, layers) shape, got {sorted(shapes)}"
            )
        n_layers = next(iter(shapes))[1]
        if layers is not None and n_layers != layers:
            raise InputError(f"{path}: {n_layers} layers, but other units of {cell.path} have {layers}")
        layers = n_layers
        parts["LoRA"].append((arrays["lora_q"] + arrays["lora_v"]) / 2.0)
        parts["Prefix"].append(arrays["prefix"])
        parts["Adapter"].append(arrays["adapter"])
    return {m: np.concatenate(v, axis=0) for m, v in parts.items()}


def gate_counts(gates: dict[str, np.ndarray], threshold: float = THRESHOLD) -> pd.DataFrame:
    """Per module: threshold calls, argmax selections, the maximum possible (images × layers), mean gate."""
    stacked = np.stack([gates[m] for m in MODULES])  # (modules, images, layers)
    winners = np.argmax(stacked, axis=0)  # ties go to the first module in MODULES
    return pd.DataFrame(
        {
            "module": list(MODULES),
            "calls_gt_threshold": [int((gates[m] > threshold).sum()) for m in MODULES],
            "argmax_selected": [int((winners == i).sum()) for i in range(len(MODULES))],
            "max_calls": [int(gates[m].size) for m in MODULES],
            "mean_gate": [round(float(gates[m].mean()), 4) for m in MODULES],
        }
    )


def layer_means(gates: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long frame: module, layer, mean gate over images (the heatmap's data)."""
    rows = [
        {"module": m, "layer": layer, "mean_gate": float(gates[m][:, layer].mean())}
        for m in MODULES
        for layer in range(gates[m].shape[1])
    ]
    return pd.DataFrame(rows)


def _label(cell: Cell) -> str:
    return cell.dataset if cell.variant == "default" else f"{cell.dataset} ({cell.variant})"


def gate_frequency(cells: Iterable[Cell], threshold: float = THRESHOLD) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Counts (one row per cell and module) and per-layer means (one row per cell, module and layer)."""
    counts, layers = [], []
    for cell in cells:
        if cell.method != "mopeft":
            continue
        gates = load_gates(cell)
        key = {"dataset": cell.dataset, "label": _label(cell), "variant": cell.variant, "seed": cell.seed}
        c = gate_counts(gates, threshold)
        counts.append(c.assign(**key, images=next(iter(gates.values())).shape[0]))
        layers.append(layer_means(gates).assign(**key))
    if not counts:
        raise InputError("no MoPEFT cells among the inputs: the gate-frequency figure needs MoPEFT cells")
    order = [
        "dataset",
        "label",
        "variant",
        "seed",
        "module",
        "images",
        "calls_gt_threshold",
        "argmax_selected",
        "max_calls",
        "mean_gate",
    ]
    return pd.concat(counts, ignore_index=True)[order], pd.concat(layers, ignore_index=True)


def gate_frequency_figure(counts: pd.DataFrame, layers: pd.DataFrame, threshold: float = THRESHOLD) -> Any:
    """The open matplotlib figure of :func:`plot_gate_frequency` (tests inspect its layout)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    labels: Sequence[str] = list(dict.fromkeys(counts["label"]))
    n = len(labels)
    fig = plt.figure(figsize=(max(10.0, 4.0 * n), 8.5), layout="constrained")
    grid = fig.add_gridspec(2, max(2, n))
    half = max(2, n) // 2
    ax_thr = fig.add_subplot(grid[0, :half])
    ax_arg = fig.add_subplot(grid[0, half:])
    palette = dict(zip(MODULES, sns.color_palette("colorblind", len(MODULES)), strict=True))
    for ax, col, title in (
        (ax_thr, "calls_gt_threshold", f"(a) calls with gate > {threshold:g}"),
        (ax_arg, "argmax_selected", "(a') argmax selections"),
    ):
        sns.barplot(
            data=counts,
            x="label",
            y=col,
            hue="module",
            hue_order=list(MODULES),
            order=labels,
            palette=palette,
            errorbar="sd",
            ax=ax,
        )
        ax.set(title=title, xlabel="", ylabel="count over images × layers")
        ax.tick_params(axis="x", rotation=20)
    # One legend for both bar panels (same hue mapping), outside them on the right: inside an axes
    # it covered the tallest bar whenever one module won everywhere (the demo's Adapter), and above
    # them it ran into the title. Constrained layout makes room for it in the figure's margin.
    handles, names = ax_thr.get_legend_handles_labels()
    for ax in (ax_thr, ax_arg):
        ax.get_legend().remove()
    fig.legend(handles, names, title="module", loc="outside right upper", frameon=False)
    mean_layers = layers.groupby(["label", "module", "layer"], as_index=False)["mean_gate"].mean()
    for i, label in enumerate(labels):
        ax = fig.add_subplot(grid[1, i])
        mat = mean_layers[mean_layers["label"] == label].pivot(
            index="module", columns="layer", values="mean_gate"
        )
        sns.heatmap(
            mat.reindex(list(MODULES)),
            vmin=0.0,
            vmax=1.0,
            cmap="viridis",
            annot=False,
            cbar=i == n - 1,
            ax=ax,
        )
        ax.set(title=f"(b) mean gate: {label}", xlabel="layer", ylabel="")
    fig.suptitle("Fig. 4.2: MoPEFT gate usage at inference")
    return fig


def plot_gate_frequency(
    counts: pd.DataFrame, layers: pd.DataFrame, out_stem: str | os.PathLike[str], threshold: float = THRESHOLD
) -> None:
    """(a) grouped bars of threshold calls and argmax selections per dataset; (b) layer × module heatmaps."""
    save_png_pdf(gate_frequency_figure(counts, layers, threshold), out_stem, dpi=150)


def write_gate_frequency(
    cell_paths: Iterable[str | os.PathLike[str]],
    out_stem: str | os.PathLike[str],
    threshold: float = THRESHOLD,
) -> pd.DataFrame:
    """Figure (PNG + PDF), counts CSV (``out_stem``.csv) and per-layer means (``out_stem``_layers.csv)."""
    counts, layers = gate_frequency(load_cells(cell_paths), threshold)
    stem = Path(out_stem)
    with atomic_path(stem.with_name(stem.name + ".csv")) as tmp:
        counts.to_csv(tmp, index=False)
    with atomic_path(stem.with_name(stem.name + "_layers.csv")) as tmp:
        layers.to_csv(tmp, index=False)
    plot_gate_frequency(counts, layers, stem, threshold)
    return counts


def build_gate_frequency(args: argparse.Namespace) -> Any:
    return write_gate_frequency(args.cells, args.out, getattr(args, "threshold", THRESHOLD))
