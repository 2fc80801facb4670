"""Fig. 4.1: a few fixed test images per dataset, their ground truth and each method's prediction.

Why these images and not the "best" ones: picking examples after seeing the predictions flatters
whichever method was looked at. ``mopeft evaluate --examples N`` saves the predictions of the first
N test stems of each unit in :func:`~mopeft.data.prepared.layout.hashed_order` (seed 0), a rule that does
not know the model; this figure shows, per dataset, the first of them over all units, for every
method, from the cells' ``eval/examples/`` folders. Panels are cropped to the labelled region (the
demo's tiled miniatures are mostly padding) and scaled down to keep the PDF small.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mopeft.data.colours import IGNORE, class_colours, colourize
from mopeft.data.images import files_by_stem, load_image
from mopeft.data.prepared.layout import hashed_order
from mopeft.errors import InputError, MissingInput
from mopeft.evaluation.evaluate import EXAMPLES_SEED
from mopeft.evaluation.metrics import ConfusionMatrix
from mopeft.io import atomic_path, read_json
from mopeft.report.figure_files import method_labels, save_png_pdf
from mopeft.report.tables import METHOD_LABELS, Cell, load_cells

PER_DATASET = 2  # example images per dataset shown
PANEL_PIXELS = 192  # longest side of a panel's image after scaling down
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_CHARS = 18  # row labels (dataset name, image stem) are cut to this length
LEGEND_ROWS = 10  # a row's class legend starts another column after this many entries


@dataclass(frozen=True)
class Example:
    """One shown test image: where it is and what each method predicted for it."""

    dataset: str
    name: str
    unit: str
    stem: str
    image: Path
    label: Path
    predictions: dict[str, Path]  # method -> eval/examples/<stem>.png
    classes: tuple[str, ...]


def _first_seed_cells(cells: Iterable[Cell]) -> dict[tuple[str, str], Cell]:
    """(dataset, method) -> the default cell of its lowest seed (one prediction per method)."""
    chosen: dict[tuple[str, str], Cell] = {}
    for cell in cells:
        if cell.variant != "default":
            continue
        key = (cell.dataset, cell.method)
        if key not in chosen or cell.seed < chosen[key].seed:
            chosen[key] = cell
    return chosen


def _examples_dir(cell: Cell, unit: str) -> Path:
    return cell.folder / "units" / unit / "eval" / "examples"


def choose_examples(
    cells: Iterable[Cell], metas: Iterable[str | os.PathLike[str]], per_dataset: int = PER_DATASET
) -> list[Example]:
    """The shown images of every dataset with cells, in the order of ``metas`` (the run's)."""
    by_key = _first_seed_cells(cells)
    methods = list(dict.fromkeys(m for _, m in by_key))
    out: list[Example] = []
    for meta_path in metas:
        meta_path = Path(meta_path)
        meta = read_json(meta_path)
        dataset = meta["dataset"]
        mine = [by_key[(dataset, m)] for m in methods if (dataset, m) in by_key]
        if not mine:
            continue
        first = mine[0]
        candidates = [
            (stem, unit) for unit in first.raw.get("units", {}) for stem in _example_stems(first, unit)
        ]
        order = {s: i for i, s in enumerate(hashed_order(sorted({s for s, _ in candidates}), EXAMPLES_SEED))}
        candidates.sort(key=lambda su: (order[su[0]], su[1]))
        for stem, unit in candidates[:per_dataset]:
            split = meta_path.parent / (unit if meta.get("tasks") else "") / "test"
            image = files_by_stem(split / "images", IMAGE_SUFFIXES, "image").get(stem)
            label = split / "labels" / f"{stem}.png"
            if image is None or not label.is_file():
                raise MissingInput(f"{split}: no test image/label {stem!r} (shown by {first.path})")
            preds = {}
            for cell in mine:
                pred = _examples_dir(cell, unit) / f"{stem}.png"
                if not pred.is_file():
                    raise MissingInput(
                        f"{pred}: missing example prediction (was {cell.path} evaluated with --examples?)"
                    )
                preds[cell.method] = pred
            name = str(meta.get("name") or dataset)
            out.append(Example(dataset, name, unit, stem, image, label, preds, tuple(meta["classes"])))
    if not out:
        raise InputError("no example predictions among the cells: Fig. 4.1 needs evaluated main cells")
    return out


def _example_stems(cell: Cell, unit: str) -> list[str]:
    folder = _examples_dir(cell, unit)
    if not folder.is_dir():
        raise MissingInput(f"{folder}: no example predictions (evaluate {cell.path} with --examples N)")
    return sorted(p.stem for p in folder.iterdir() if p.suffix == ".png")


def image_miou(pred: np.ndarray, label: np.ndarray, num_classes: int) -> float:
    """mIoU (%) of one image over the classes present in its label or prediction (MESS counting)."""
    cm = ConfusionMatrix(num_classes)
    cm.update(pred.astype(np.int64), label.astype(np.int64))
    return float(cm.compute()["miou"])


def _crop_box(label: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of the labelled (non-ignore) pixels, or the whole image."""
    rows, cols = np.nonzero(label != IGNORE)
    if rows.size == 0:
        return slice(None), slice(None)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


def _small(array: np.ndarray, nearest: bool) -> np.ndarray:
    from PIL import Image

    h, w = array.shape[:2]
    scale = PANEL_PIXELS / max(h, w)
    if scale >= 1:
        return array
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize(size, resample))


def _short(text: str, width: int = LABEL_CHARS) -> str:
    """A row label that fits beside a panel (long stems would run into the next row)."""
    return text if len(text) <= width else text[: width - 1] + "…"


def examples_frame(examples: Sequence[Example], methods: Sequence[str]) -> pd.DataFrame:
    """One row per (example, method): where the image is and the prediction's per-image mIoU."""
    rows = []
    for ex in examples:
        label = load_image(ex.label)
        for method in methods:
            if method in ex.predictions:
                pred = load_image(ex.predictions[method])
                rows.append(
                    {
                        "dataset": ex.dataset,
                        "unit": ex.unit,
                        "image": ex.stem,
                        "method": method,
                        "image_miou": round(image_miou(pred, label, len(ex.classes)), 2),
                    }
                )
    return pd.DataFrame(rows)


def shown_classes(panels: Sequence[np.ndarray], num_classes: int) -> list[int]:
    """Class ids that colour any of a row's (cropped) ground-truth and prediction panels, sorted:
    the entries of that row's legend."""
    present: set[int] = set()
    for ids in panels:
        present |= {int(v) for v in np.unique(ids) if int(v) < num_classes}
    return sorted(present)


def examples_figure(
    examples: Sequence[Example],
    methods: Sequence[str],
    scores: pd.DataFrame,
    labels: Mapping[str, str] | None = None,
) -> Any:
    """The open matplotlib figure of :func:`plot_examples` (tests read its legends). ``labels``:
    column title per method (:func:`method_labels`; the study's label by default).

    Every row has its own class legend, right of its last panel, naming the classes its panels
    show. Why not one legend of all classes per dataset: Dark Zurich has 20 (FloodNet 10), too many
    to list beside a 1.4-inch row, so its rows had no legend at all; the few classes one cropped
    image and its predictions actually contain always fit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    titles = [(labels or {}).get(m) or METHOD_LABELS.get(m, m) for m in methods]
    columns = ["Image", "Ground truth", *titles]
    fig, axes = plt.subplots(
        len(examples),
        len(columns),
        figsize=(1.35 * len(columns) + 2.2, 1.4 * len(examples) + 0.8),
        squeeze=False,
    )
    score = {(r.dataset, r.unit, r.image, r.method): r.image_miou for r in scores.itertuples()}
    for i, ex in enumerate(examples):
        label = load_image(ex.label)
        box = _crop_box(label)
        k = len(ex.classes)
        ids = [label[box]]
        for method in methods:
            pred = ex.predictions.get(method)
            ids.append(None if pred is None else load_image(pred)[box])
        panels = [_small(load_image(ex.image, "RGB")[box], False)]
        panels += [None if a is None else _small(colourize(a, k), True) for a in ids]
        for j, panel in enumerate(panels):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if panel is not None:
                ax.imshow(panel, interpolation="nearest")
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
            if j >= 2 and panel is not None:
                value = score.get((ex.dataset, ex.unit, ex.stem, methods[j - 2]))
                ax.set_xlabel(f"{value:.1f}", fontsize=7)
        unit = "" if ex.unit == "main" else f" ({ex.unit})"
        axes[i][0].set_ylabel(f"{_short(ex.name)}\n{_short(ex.stem)}{unit}", fontsize=6)
        shown = shown_classes([a for a in ids if a is not None], k)
        colours = class_colours(k) / 255.0
        handles = [Patch(color=colours[c], label=_short(ex.classes[c])) for c in shown]
        axes[i][-1].legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            fontsize=6,
            frameon=False,
            ncols=max(1, -(-len(handles) // LEGEND_ROWS)),
            handlelength=1.0,
            columnspacing=0.8,
        )
    fig.suptitle(
        "Fig. 4.1: fixed test images (first in hashed order), ground truth and each method's prediction\n"
        "(number: the image's mIoU %; cropped to the labelled region; black: ignore; "
        "legend: the classes in the row)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def plot_examples(
    examples: Sequence[Example],
    methods: Sequence[str],
    scores: pd.DataFrame,
    out_stem: str | os.PathLike[str],
    labels: Mapping[str, str] | None = None,
) -> None:
    """Rows: examples (grouped by dataset); columns: image, ground truth, one per method."""
    save_png_pdf(examples_figure(examples, methods, scores, labels), out_stem, dpi=110)


def write_examples(
    cell_paths: Iterable[str | os.PathLike[str]],
    metas: Sequence[str | os.PathLike[str]],
    out_stem: str | os.PathLike[str],
    per_dataset: int = PER_DATASET,
    config: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Figure (PNG + PDF) and ``out_stem``.csv: the shown images and their per-image mIoU."""
    cells = load_cells(cell_paths)
    methods = list(dict.fromkeys(c.method for c in cells if c.variant == "default"))
    examples = choose_examples(cells, metas, per_dataset)
    scores = examples_frame(examples, methods)
    stem = Path(out_stem)
    with atomic_path(stem.with_name(stem.name + ".csv")) as tmp:
        scores.to_csv(tmp, index=False)
    plot_examples(examples, methods, scores, stem, method_labels(config, cells))
    return scores


def build_examples(args: argparse.Namespace) -> Any:
    if not args.data:
        raise InputError("figure examples needs --data: the prepared datasets' meta.json files")
    return write_examples(args.cells, args.data, args.out, args.per_dataset, getattr(args, "config", None))
