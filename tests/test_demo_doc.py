"""docs/demo.md's numbers are rendered from a run's tables (`make demo-doc`), never typed: given a
small results folder written by the real table code, the rendered block holds its numbers and the
right "above the baseline" statements, per dataset and on the mean; only the marked block changes."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mopeft.report.demo_doc import BEGIN, END, load_results, render, replace_block
from mopeft.report.main_tables import main_table
from mopeft.report.provenance import collect_provenance
from mopeft.report.registry import TABLES
from mopeft.report.tables import load_cells, write_table

# dataset -> method -> mIoU. Dark Zurich: decoderFT and VPT below the baseline; Shapes: every
# method below it; Kvasir: every method above. Study means (Dark Zurich, Kvasir) by hand below.
VALUES = {
    "dark_zurich": dict(
        baseline=0.97, decoder_ft=0.90, lora=1.20, vpt_deep=1.10, vpt=0.87, adapter=1.30, mopeft=1.05,
        mopeft_logit=1.00,
    ),
    "kvasir_instrument": dict(
        baseline=55.25, decoder_ft=65.66, lora=80.00, vpt_deep=85.00, vpt=60.01, adapter=91.00,
        mopeft=91.59, mopeft_logit=90.00,
    ),
    "shapes": dict(
        baseline=32.95, decoder_ft=32.29, lora=31.00, vpt_deep=31.50, vpt=30.00, adapter=31.85,
        mopeft=31.91, mopeft_logit=32.00,
    ),
}  # fmt: skip


def _cell(root: Path, dataset: str, method: str, miou: float) -> Path:
    path = root / "cells" / dataset / method / "default" / "seed0" / "metrics.json"
    path.parent.mkdir(parents=True)
    kfold = dataset == "dark_zurich"
    data = {
        "dataset": dataset,
        "method": method,
        "variant": "default",
        "seed": 0,
        "miou": miou,
        "method_options": {"r": 8, "length": 20, "dmid": 64} if method == "mopeft" else {},
        "per_class_iou": {},
        "combine": "pool" if kfold else "single",
        "units": {"fold0": {}, "fold1": {}} if kfold else {"main": {}},
        "synthetic": True,
    }
    if dataset == "shapes":
        data |= {"domain": "Custom", "name": "Shapes (generated)"}
    path.write_text(json.dumps(data))
    return path


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished run's tables/ and figures/ as `mopeft table 4.3/4.4` and the curves write them."""
    cells = load_cells(_cell(tmp_path, d, m, v) for d, methods in VALUES.items() for m, v in methods.items())
    for name in ("4.3", "4.4"):
        df, display, notes, used = main_table(cells, TABLES[name].methods)
        if name == "4.4":  # the paired columns `--bootstrap` adds (no per-image data here)
            paired = {
                "kvasir_instrument": ("adapter", 0.59, 0.28, 0.75),
                "dark_zurich": ("lora", -0.25, -0.95, 0.55),
            }
            rows = [paired.get(d, ("", *[float("nan")] * 3)) for d in df["dataset"]]
            for i, key in enumerate(("", "_diff", "_low", "_high")):
                df[f"mopeft_vs_best_single{key}"] = [r[i] for r in rows]
        stem = tmp_path / "tables" / f"table_{name.replace('.', '_')}"
        stem.parent.mkdir(exist_ok=True)
        write_table(df, stem, name, collect_provenance(None, [c.raw for c in used]), notes, display=display)
    (tmp_path / "figures").mkdir()
    pd.DataFrame(
        [
            dict(dataset="shapes", method="baseline", variant="default", seed=0, unit="main", steps=60,
                 loss_first=0.944, loss_last=0.945, fell=False),
            dict(dataset="shapes", method="lora", variant="default", seed=0, unit="main", steps=60,
                 loss_first=0.9, loss_last=0.5, fell=True),
        ]
    ).to_csv(tmp_path / "figures/training_curves_summary.csv", index=False)  # fmt: skip
    return tmp_path


def test_the_rendered_block_states_what_the_tables_show(run_dir: Path) -> None:
    results = load_results(run_dir)
    assert results.methods[0] == "baseline" and len(results.methods) == 8
    assert results.means["baseline"] == 28.11 and results.means["decoder_ft"] == 33.28
    text = render(results)
    assert text.startswith(BEGIN) and text.endswith(END)
    # the mean holds for every method, the datasets do not
    assert "**Mean over the study datasets**: all 7 methods above the frozen baseline (28.11)." in text
    assert (
        "**Dark Zurich (k-fold, k=2)**: 5 of 7 methods above the baseline (0.97); "
        "below: decoderFT 0.90, VPT 0.87." in text
    )
    assert "**Kvasir-Instr.**: all 7 methods above the baseline (55.25)." in text
    assert (
        "**Shapes (generated)**: none of the 7 methods above the baseline (32.95); "
        "the best: decoderFT 32.29." in text  # LoRA 31.00: not tied
    )
    assert (
        "**Datasets on which each method is above the baseline**: decoderFT 1 of 3, LoRA 2 of 3, "
        "VPT Deep 2 of 3, VPT 1 of 3, Adapter 2 of 3, MoPEFT 2 of 3, MoPEFT-logit* 2 of 3." in text
    )
    assert "(mean): 5 of 6 encoder methods above decoderFT (33.28); not above it: VPT 30.44." in text
    assert (
        "interval over the test images): Dark Zurich (k-fold, k=2) -0.25 [-0.95, +0.55] vs LoRA; "
        "Kvasir-Instr. +0.59 [+0.28, +0.75] (excludes 0) vs Adapter." in text
    )
    assert "shapes/baseline main (0.944 → 0.945)" in text and "shapes/lora" not in text
    # the tables: the study mean row, and one row per dataset with its count and marks
    assert "| 28.11 | 33.28 | 40.60 | 43.05 | 30.44 | 46.15 | 46.32 | 45.50 |" in text
    assert "| Dark Zurich (k-fold, k=2) | 0.97 | 0.90 ▼ | 1.20 ▲ |" in text
    assert text.count("| 5 of 7 |") == 1 and text.count("| 7 of 7 |") == 1 and text.count("| 0 of 7 |") == 1
    assert "(Dark Zurich and Kvasir-Instr.;" in text  # the study datasets the mean covers
    assert f"git commit {results.commit}" in text and results.commit != "unknown"


def test_level_values_are_neither_above_nor_below(run_dir: Path) -> None:
    results = load_results(run_dir)
    results.values[("kvasir_instrument", "vpt")] = 55.25
    text = render(results)
    assert "**Kvasir-Instr.**: 6 of 7 methods above the baseline (55.25); level with it: VPT 55.25." in text
    results.values[("shapes", "lora")] = 32.29  # a tie for the best below the baseline: both named
    assert "(32.95); the best: decoderFT 32.29, LoRA 32.29." in render(results)


def test_only_the_marked_block_is_replaced(run_dir: Path) -> None:
    block = render(load_results(run_dir))
    page = f"# Demo\n\nprose 1.00\n\n{BEGIN}\nold 45.58\n{END}\n\nmore prose\n"
    new = replace_block(page, block)
    assert new == f"# Demo\n\nprose 1.00\n\n{block}\n\nmore prose\n"
    assert replace_block(new, block) == new  # regenerating from the same run changes nothing
    for broken in ("no markers", f"{END}\n{BEGIN}", f"{BEGIN}{END}{BEGIN}{END}"):
        with pytest.raises(ValueError, match="exactly one"):
            replace_block(broken, block)


def test_an_unfinished_run_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"table_4_3.csv: not found \(run `make demo` first\)"):
        load_results(tmp_path)
