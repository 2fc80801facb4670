"""Tables 4.3/4.4/4.6–4.8 with bootstrap intervals and MoPEFT's paired comparison (beyond the study)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mopeft.cli import main as cli_main
from mopeft.evaluation.bootstrap import cell_interval, load_cell_runs, miou_from_counts, paired_difference
from mopeft.io import write_json
from mopeft.report.main_tables import main_table
from mopeft.report.registry import TABLES
from mopeft.report.tables import load_cells

N_IMAGES, K = 12, 2


def _counts(rng: np.random.Generator, skill: float) -> np.ndarray:
    """(N, K, 3) tp/fp/fn of a binary task; ``skill`` in (0, 1) is the fraction of pixels right."""
    counts = np.zeros((N_IMAGES, K, 3), dtype=np.int64)
    for i in range(N_IMAGES):
        fg = int(rng.integers(200, 400))
        tp1 = int(fg * skill * rng.uniform(0.9, 1.0))
        fn1, fp1 = fg - tp1, int((fg - tp1) * rng.uniform(0.5, 1.5))
        bg = 1000
        counts[i, 1] = (tp1, fp1, fn1)
        counts[i, 0] = (bg - fp1, fn1, fp1)
    return counts


def _cell(root: Path, dataset: str, method: str, counts: np.ndarray, seed: int = 0) -> Path:
    """A cell as the pipeline writes it: units/main/eval/{per_image.npz, metrics.json} + metrics.json."""
    cell = root / "cells" / dataset / method / "default" / f"seed{seed}"
    ev = cell / "units" / "main" / "eval"
    ev.mkdir(parents=True)
    names = np.array([f"img{i:03d}.png" for i in range(N_IMAGES)])
    with open(ev / "per_image.npz", "wb") as f:
        np.savez(f, images=names, counts=counts)
    miou = miou_from_counts(counts)
    write_json(ev / "metrics.json", {"miou": miou, "unit": "main"})
    write_json(
        cell / "metrics.json",
        {"dataset": dataset, "method": method, "variant": "default", "seed": seed, "miou": miou,
         "method_options": {}, "combine": "single", "units": {"main": {"miou": miou}},
         "synthetic": True, "weights": "random init"},
    )  # fmt: skip
    return cell / "metrics.json"


@pytest.fixture
def cells(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    skills = {"lora": 0.6, "vpt_deep": 0.5, "vpt": 0.4, "adapter": 0.55, "mopeft": 0.9, "mopeft_logit": 0.58}
    out = [_cell(tmp_path, "kvasir_instrument", m, _counts(rng, s)) for m, s in skills.items()]
    out.append(_cell(tmp_path, "chase_db1", "mopeft", _counts(rng, 0.5)))
    out.append(_cell(tmp_path, "chase_db1", "lora", _counts(rng, 0.5)))
    return out


def test_table_4_4_carries_intervals_and_the_paired_comparison(cells: list[Path]):
    df, display, notes, _ = main_table(load_cells(cells), TABLES["4.4"].methods, bootstrap=400)
    row = df.set_index("dataset").loc["kvasir_instrument"]
    runs = load_cell_runs([cells[4].parent])  # mopeft
    ci = cell_interval(runs, n_resamples=400, seed=0)  # the same draw the table makes
    assert (row["mopeft_ci_low"], row["mopeft_ci_high"]) == (round(ci["low"], 2), round(ci["high"], 2))
    assert row["mopeft_ci_low"] <= row["mopeft"] <= row["mopeft_ci_high"]
    # Best single PEFT on Kvasir is LoRA (skill 0.6); MoPEFT (0.9) is clearly better: interval > 0.
    assert row["mopeft_vs_best_single"] == "lora" and bool(row["mopeft_vs_best_single_excludes_zero"])
    d = paired_difference(runs, load_cell_runs([cells[0].parent]), n_resamples=400, seed=0)
    assert row["mopeft_vs_best_single_low"] == round(d["low"], 2) > 0
    # CHASE DB1: same skill, the interval covers 0 and nothing is marked.
    chase = df.set_index("dataset").loc["chase_db1"]
    assert not bool(chase["mopeft_vs_best_single_excludes_zero"])
    assert chase["mopeft_vs_best_single_low"] < 0 < chase["mopeft_vs_best_single_high"]
    shown = display.set_index("Dataset").loc["Kvasir-Instr."]
    assert shown["MoPEFT − best single"].endswith("* vs LoRA") and "[" in shown["MoPEFT"]
    # MoPEFT-logit is shown, without a study value, and said to be this project's addition.
    assert math.isnan(row["mopeft_logit_paper"]) and any("this project's addition" in n for n in notes)
    assert any("paired bootstrap" in n for n in notes) and any("bootstrap interval" in n for n in notes)


def test_the_cli_writes_the_intervals_and_refuses_cells_without_per_image_counts(cells, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run: t\n")
    out = tmp_path / "t44"
    args = ["table", "4.4", "--cells", *map(str, cells), "--config", str(cfg), "--out", str(out)]
    assert cli_main([*args, "--bootstrap", "200"]) == 0
    assert "mopeft_ci_low" in out.with_suffix(".csv").read_text().splitlines()[0]
    (cells[0].parent / "units/main/eval/per_image.npz").unlink()
    assert cli_main([*args, "--bootstrap", "200"]) == 2  # one line naming the missing file
