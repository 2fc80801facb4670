"""The report's own-data parts: folder datasets' rows in Tables 4.3/4.4 (domain "Custom"), the
training-curve figure and its not-falling flag, Fig. 4.1 from the cells' example predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import write_blocky_dataset
from PIL import Image
from test_report_tables import TABLE_4_3, _cell, _row

from mopeft.cli import main as cli_main
from mopeft.data.prepared.layout import hashed_order
from mopeft.report.curves import loss_fell, write_training_curves
from mopeft.report.examples import write_examples
from mopeft.report.main_tables import main_table
from mopeft.report.tables import load_cells

FALLING = list(np.linspace(1.0, 0.2, 40))
FLAT = [0.70] * 20 + [0.699] * 20  # moved by 0.1 %: not trained


def _custom(cell: Path, domain: str | None = "Custom", name: str = "Shapes (generated)") -> Path:
    data = json.loads(cell.read_text())
    data.update({"name": name} | ({"domain": domain} if domain else {}))
    cell.write_text(json.dumps(data))
    return cell


def _log(cell: Path, losses: list[float], unit: str = "main") -> None:
    path = cell.parent / "units" / unit / "train_log.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"losses": losses, "unit": unit}))


def test_loss_fell_needs_the_last_tenth_one_percent_below_the_first():
    assert loss_fell(FALLING)
    assert not loss_fell(FLAT)
    assert not loss_fell(list(np.linspace(0.2, 1.0, 40)))  # rising
    assert not loss_fell([1.0, float("nan"), 0.5])
    assert loss_fell([1.0, 0.5])  # two steps: one each side


def test_folder_datasets_get_rows_and_a_domain_mean_outside_the_overall_mean(tmp_path):
    cells = [
        _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0),
        _custom(_cell(tmp_path, "shapes", "mopeft", 40.0)),
        _custom(_cell(tmp_path, "shapes", "baseline", 30.0)),
        _custom(_cell(tmp_path, "leaves", "mopeft", 60.0), domain=None, name="Leaves"),  # no domain: Custom
    ]
    df, display, notes, used = main_table(load_cells(cells), TABLE_4_3)
    assert len(used) == 4
    assert list(df["dataset"][22:24]) == ["leaves", "shapes"]  # after the study's 22, by domain and key
    shapes = _row(df, "shapes")
    assert (shapes["domain"], shapes["name"], shapes["mopeft"], shapes["baseline"]) == (
        "Custom",
        "Shapes (generated)",
        40.0,
        30.0,
    )
    assert np.isnan(shapes["mopeft_paper"])
    custom = _row(df, "mean", "Mean Custom (datasets present)")
    assert (custom["mopeft"], custom["baseline"]) == (50.0, 30.0)
    overall = _row(df, "mean", "Mean (all study datasets present)")
    assert (overall["mopeft"], overall["mopeft_paper"]) == (70.0, 71.92)  # the study's datasets only
    assert "Leaves" in display["Dataset"].tolist()
    assert any("Datasets outside the study's table (leaves, shapes)" in n for n in notes)
    # the coverage note counts the overall mean's datasets: 1 of the study's 22, not 3 of 24
    assert "(per column: Baseline 0/22, decoderFT 0/22, MoPEFT 1/22)" in " ".join(notes)


def test_tables_name_the_runs_whose_loss_did_not_fall(tmp_path, capsys):
    good = _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0)
    flat = _cell(tmp_path, "kvasir_instrument", "baseline", 45.0)
    _log(good, FALLING)
    _log(flat, FLAT)
    _, display, notes, _ = main_table(load_cells([good, flat]), TABLE_4_3, losses=True)
    note = next(n for n in notes if "did not fall" in n)
    assert note.startswith("‡ Training loss did not fall in 1 of 2 runs")
    assert "kvasir_instrument/baseline seed 0 (0.700 → 0.699)" in note
    kv = display[display["Dataset"] == "Kvasir-Instr."].iloc[0]
    assert kv["Baseline"].endswith("‡") and not kv["MoPEFT"].endswith("‡")
    _log(flat, FALLING)
    _, _, notes, _ = main_table(load_cells([good, flat]), TABLE_4_3, losses=True)
    assert any(n.startswith("Training loss fell in all 2 training runs") for n in notes)
    out = tmp_path / "t43"
    args = ["table", "4.3", "--cells", str(good), str(flat), "--losses", "--config", "c.yaml"]
    assert cli_main([*args, "--out", str(out)]) == 0
    assert "Training loss fell in all 2" in out.with_suffix(".md").read_text()


def test_training_curves_figure_and_its_numbers(tmp_path):
    cells = [
        _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0),
        _cell(tmp_path, "kvasir_instrument", "baseline", 45.0),
        _cell(tmp_path, "kvasir_instrument", "mopeft", 60.0, "r16"),  # ablation cell: not drawn
    ]
    _log(cells[0], FALLING)
    _log(cells[1], FLAT)
    summary = write_training_curves(cells, tmp_path / "fig/training_curves")
    for ext in ("png", "pdf", "csv"):
        assert (tmp_path / f"fig/training_curves.{ext}").stat().st_size > 0
    assert summary.set_index("method")["fell"].to_dict() == {"mopeft": True, "baseline": False}
    curves = pd.read_csv(tmp_path / "fig/training_curves.csv")
    assert len(curves) == 80 and set(curves["variant"]) == {"default"}
    (cells[1].parent / "units/main/train_log.json").unlink()
    try:
        write_training_curves(cells, tmp_path / "fig/again")
    except FileNotFoundError as exc:
        assert "baseline/default/seed0/units/main/train_log.json: train log of unit 'main'" in str(exc)
    else:
        raise AssertionError("a missing train log must be an error naming it")


def test_examples_figure_shows_the_fixed_images_of_each_method(tmp_path):
    ds = write_blocky_dataset(tmp_path / "prepared", n_train=1, n_test=5, key="toy")
    meta = json.loads((ds / "meta.json").read_text())
    stems = sorted(p.stem for p in (ds / "test/images").iterdir())
    saved = hashed_order(stems, 0)[:4]  # more saved than shown (k-fold units each save their own)
    chosen = saved[:2]
    cells = []
    for method, miou in (("baseline", 40.0), ("mopeft", 70.0)):
        cell = _custom(_cell(tmp_path, "toy", method, miou), name="Toy")
        folder = cell.parent / "units/main/eval/examples"
        folder.mkdir(parents=True)
        for stem in saved:
            label = np.asarray(Image.open(ds / "test/labels" / f"{stem}.png"))
            pred = label.copy() if method == "mopeft" else np.zeros_like(label)
            Image.fromarray(np.where(pred == 255, 0, pred).astype(np.uint8)).save(folder / f"{stem}.png")
        cells.append(cell)
    scores = write_examples(cells, [ds / "meta.json"], tmp_path / "fig/examples")
    assert (tmp_path / "fig/examples.png").stat().st_size > 0 and (tmp_path / "fig/examples.pdf").is_file()
    assert sorted(set(scores["image"])) == sorted(chosen) and meta["dataset"] == "toy"
    assert (scores[scores["method"] == "mopeft"]["image_miou"] == 100.0).all()
    assert (scores[scores["method"] == "baseline"]["image_miou"] < 100.0).all()


def test_ablation_tables_show_a_folder_dataset_the_study_did_not_ablate(tmp_path):
    from mopeft.report.ablations import ablation_table

    r16 = {"r": 16, "length": 20, "dmid": 64}
    cells = [
        _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0),
        _custom(_cell(tmp_path, "shapes", "mopeft", 40.0)),
        _custom(_cell(tmp_path, "shapes", "mopeft", 44.0, "r16", options=r16)),
    ]
    df, _, notes, used = ablation_table(load_cells(cells), "r")
    shapes = _row(df, "shapes")
    assert (shapes["domain"], shapes["rank_8"], shapes["rank_16"]) == ("Custom", 40.0, 44.0)
    assert len(used) == 3 and any("outside the study's table (shapes)" in n for n in notes)
    overall = _row(df, "mean", "Mean (all study datasets present)")
    assert overall["rank_8"] == 70.0
