"""Tables 4.1–4.8: hand-written cell results -> exact CSV values beside the study's numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from mopeft.cli import main as cli_main
from mopeft.data.spec import DatasetSpec
from mopeft.report import dataset_tables, paper
from mopeft.report.ablations import ablation_table, cell_options, mopeft_matching, mopeft_note
from mopeft.report.efficiency import efficiency_table, load_bench, load_flops, load_params
from mopeft.report.main_tables import main_table
from mopeft.report.provenance import collect_provenance
from mopeft.report.registry import TABLES
from mopeft.report.tables import load_cell, load_cells, tex_escape

TABLE_4_3, TABLE_4_4 = TABLES["4.3"].methods, TABLES["4.4"].methods

DEFAULTS = {"r": 8, "length": 20, "dmid": 64}


def _cell(
    root: Path,
    dataset: str,
    method: str,
    miou: float,
    variant: str = "default",
    seed: int = 0,
    options: dict | None = None,
    synthetic: bool = True,
    weights: str = "random init",
) -> Path:
    path = root / "cells" / dataset / method / variant / f"seed{seed}" / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "dataset": dataset,
                "method": method,
                "variant": variant,
                "seed": seed,
                "method_options": options
                if options is not None
                else (DEFAULTS if method == "mopeft" else {}),
                "miou": miou,
                "per_class_iou": {},
                "combine": "single",
                "units": {"main": {"miou": miou}},
                "num_images": 4,
                "gates": [],
                "synthetic": synthetic,
                "weights": weights,
                "arch": "tiny",
                "image_size": 64,
            }
        )
    )
    return path


@pytest.fixture
def cells(tmp_path: Path) -> list[Path]:
    return [
        _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0, seed=0),
        _cell(tmp_path, "kvasir_instrument", "mopeft", 72.0, seed=1),
        _cell(tmp_path, "isprs_potsdam", "mopeft", 38.456),
        _cell(tmp_path, "kvasir_instrument", "baseline", 45.5),
        _cell(tmp_path, "isprs_potsdam", "decoder_ft", 30.0),
        _cell(tmp_path, "kvasir_instrument", "lora", 66.0),
        _cell(
            tmp_path, "kvasir_instrument", "mopeft", 73.0, "r16", options={"r": 16, "length": 20, "dmid": 64}
        ),
        _cell(
            tmp_path,
            "kvasir_instrument",
            "mopeft",
            60.0,
            "oddname",
            options={"r": 4, "length": 20, "dmid": 64},
        ),
        _cell(tmp_path, "kvasir_instrument", "mopeft", 44.0, "L5", options={"r": 8, "length": 5, "dmid": 64}),
        _cell(tmp_path, "kvasir_instrument", "mopeft", 50.0, "dmid256", options={**DEFAULTS, "dmid": 256}),
    ]


def _row(df: pd.DataFrame, dataset: str, name: str | None = None) -> pd.Series:
    sel = df[(df["dataset"] == dataset) & ((df["name"] == name) if name else True)]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_table_4_3_values_means_and_seed_stats(cells: list[Path]) -> None:
    df, display, notes, used = main_table(load_cells(cells), TABLE_4_3)
    kv = _row(df, "kvasir_instrument")
    assert (kv["mopeft_mean"], kv["mopeft_std"], kv["mopeft_n"]) == (71.0, 1.41, 2)
    assert (kv["mopeft_paper"], kv["mopeft_diff"]) == (71.92, -0.92)
    assert (kv["baseline_mean"], kv["baseline_n"], kv["baseline_paper"], kv["baseline_diff"]) == (
        45.5,
        1,
        46.82,
        -1.32,
    )
    assert math.isnan(kv["baseline_std"])
    po = _row(df, "isprs_potsdam")
    assert (po["mopeft_mean"], po["mopeft_paper"], po["mopeft_diff"]) == (38.46, 40.42, -1.96)
    assert (po["decoder_ft_mean"], po["decoder_ft_paper"], po["decoder_ft_diff"]) == (30.0, 29.92, 0.08)
    bdd = _row(df, "bdd100k")  # not run: our value empty, the study's value still shown
    assert math.isnan(bdd["mopeft_mean"]) and bdd["mopeft_paper"] == 50.93 and math.isnan(bdd["mopeft_diff"])
    overall = _row(df, "mean", "Mean (all datasets present)")
    assert (overall["mopeft_mean"], overall["mopeft_paper"], overall["mopeft_diff"]) == (54.73, 56.17, -1.44)
    med = _row(df, "mean", "Mean Medical Imaging (datasets present)")
    assert (med["mopeft_mean"], med["mopeft_paper"], med["baseline_mean"], med["baseline_paper"]) == (
        71.0,
        71.92,
        45.5,
        46.82,
    )
    assert math.isnan(med["decoder_ft_mean"])
    assert not (df["name"] == "Mean General (datasets present)").any()  # no General cell was run
    assert len(df) == 22 + 3  # 22 datasets + Earth Monitoring, Medical Imaging and overall means
    assert list(df["dataset"][:22]) == paper.main_results()["dataset"].tolist()
    kv_disp = display[display["Dataset"] == "Kvasir-Instr."].iloc[0]
    assert kv_disp["MoPEFT"] == "71.00 ± 1.41 (n=2)" and kv_disp["MoPEFT Δ"] == "-0.92"
    med_disp = display[display["Dataset"] == "Mean Medical Imaging (datasets present)"].iloc[0]
    shown = (med_disp["Baseline"], med_disp["Baseline (paper)"], med_disp["Baseline Δ"])
    assert shown == ("45.50", "46.82", "-1.32")
    assert med_disp["decoderFT"] == "–"
    assert display[display["Dataset"] == "BDD100K"].iloc[0]["MoPEFT"] == "–"
    assert "matches rank_16" in notes[0] and "MoPEFT 2/22" in " ".join(notes)
    assert len(used) == 5  # ablation variants and LoRA are not in Table 4.3


def test_table_4_4_single_seed_layout(tmp_path: Path) -> None:
    cells = [
        _cell(tmp_path, "kvasir_instrument", "lora", 66.0),
        _cell(tmp_path, "kvasir_instrument", "vpt", 50.0),
    ]
    df, _, _, _ = main_table(load_cells(cells), TABLE_4_4)
    assert "lora_mean" not in df.columns
    kv = _row(df, "kvasir_instrument")
    assert (kv["lora"], kv["lora_paper"], kv["lora_diff"]) == (66.0, 66.97, -0.97)
    assert (kv["vpt"], kv["vpt_paper"], kv["vpt_diff"]) == (50.0, 52.23, -2.23)
    assert math.isnan(kv["mopeft"]) and kv["mopeft_paper"] == 71.92


def test_ablation_tables_place_cells_by_options(cells: list[Path]) -> None:
    loaded = load_cells(cells)
    rank, _, notes, _ = ablation_table(loaded, "r")
    kv = _row(rank, "kvasir_instrument")
    assert (kv["rank_4_mean"], kv["rank_4_paper"], kv["rank_4_diff"]) == (60.0, 60.72, -0.72)
    assert (kv["rank_8_mean"], kv["rank_8_std"], kv["rank_8_n"], kv["rank_8_diff"]) == (71.0, 1.41, 2, 3.57)
    assert (kv["rank_16_mean"], kv["rank_16_diff"]) == (73.0, 1.08)
    assert (kv["baseline_mean"], kv["baseline_paper"]) == (45.5, 46.82)
    assert _row(rank, "isprs_potsdam")["rank_8_diff"] == 0.19
    assert list(rank["dataset"][:9]) == [
        "isaid",
        "isprs_potsdam",
        "worldfloods",
        "floodnet",
        "uavid",
        "kvasir_instrument",
        "chase_db1",
        "cryonuseg",
        "paxray4",
    ]
    assert "matches rank_16" in notes[0]
    length, _, _, _ = ablation_table(loaded, "length")
    kv = _row(length, "kvasir_instrument")
    assert (kv["L_5_mean"], kv["L_5_paper"], kv["L_5_diff"]) == (44.0, 43.35, 0.65)
    assert (kv["L_20_mean"], kv["L_20_diff"]) == (71.0, -0.92)  # the default cell; r16/r4/dmid cells excluded
    dmid, _, _, _ = ablation_table(loaded, "dmid")
    kv = _row(dmid, "kvasir_instrument")
    assert (kv["dmid_64_mean"], kv["dmid_64_diff"]) == (71.0, 8.94)
    assert (kv["dmid_256_mean"], kv["dmid_256_paper"], kv["dmid_256_diff"]) == (50.0, 71.92, -21.92)
    assert "paxray4" not in set(dmid["dataset"])


def test_cell_options_come_from_method_options_only(tmp_path: Path) -> None:
    """No guessing from the variant name or option aliases: what the model was built with, or an error."""
    cell = load_cell(_cell(tmp_path, "isaid", "mopeft", 1.0, "r16", options={**DEFAULTS, "r": 16}))
    assert cell_options(cell) == {"r": 16, "length": 20, "dmid": 64}
    cell = load_cell(_cell(tmp_path, "isaid", "mopeft", 1.0, "r4", options={"rank": 4}))
    with pytest.raises(ValueError, match=r"r4/seed0/metrics\.json: method_options lacks"):
        cell_options(cell)


def test_mopeft_matches_ablation_on_real_paper_csvs() -> None:
    match = mopeft_matching()
    assert {k: v["column"] for k, v in match.items()} == {
        "r": "rank_16",
        "length": "L_20",
        "dmid": "dmid_256",
    }
    assert [(v["matched"], v["total"]) for v in match.values()] == [(9, 9), (9, 9), (8, 8)]
    assert match["r"]["max_abs_diff"] == 0.03
    note = mopeft_note()
    assert "r=16, L=20, D_mid=256" in note and "stated defaults r=8, L=20, D_mid=64" in note


def test_cli_writes_csv_md_tex_with_provenance(cells: list[Path], tmp_path: Path) -> None:
    config = tmp_path / "demo.yaml"
    config.write_text("run: demo\n")
    out = tmp_path / "tables" / "table_4_3"
    assert (
        cli_main(["table", "4.3", "--cells", *map(str, cells), "--config", str(config), "--out", str(out)])
        == 0
    )
    csv = pd.read_csv(out.with_suffix(".csv"))
    assert _row(csv, "kvasir_instrument")["mopeft_diff"] == -0.92
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# Table 4.3")
    for text in (
        "Provenance:",
        f"Config: {config}",
        "Git commit:",
        "Base weights: random init",
        "Data: synthetic",
        "matches rank_16",
        "matches L_20",
        "matches dmid_256",
        "| Kvasir-Instr. ",
    ):
        assert text in md, text
    tex = out.with_suffix(".tex").read_text()
    for text in (
        r"\begin{table}",
        r"\caption{Table 4.3",
        r"\toprule",
        r"\midrule",
        r"\bottomrule",
        "Base weights: random init",
        r"\ensuremath{\pm}",
        "matches rank\\_16",
    ):
        assert text in tex, text
    assert (
        cli_main(
            [
                "table",
                "4.6",
                "--cells",
                *map(str, cells),
                "--config",
                str(config),
                "--out",
                str(tmp_path / "t46"),
            ]
        )
        == 0
    )
    assert "matches rank_16" in (tmp_path / "t46.md").read_text()


def test_cli_bad_cell_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"dataset": "isaid", "method": "lora"}))
    assert cli_main(["table", "4.4", "--cells", str(bad), "--config", "x", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "miou" in err


def test_provenance_mixed_and_not_a_checkout(tmp_path: Path) -> None:
    prov = collect_provenance(
        None,
        [{"weights": "abc", "synthetic": False}, {"weights": "random init", "synthetic": True}],
        repo=tmp_path,
    )
    assert (prov["git_commit"], prov["weights"], prov["data"], prov["config"]) == (
        "unknown",
        "mixed",
        "mixed",
        "not given",
    )
    prov = collect_provenance(None, [{"weights": "abc", "synthetic": False}] * 2)
    assert (prov["weights"], prov["data"]) == ("abc", "real")
    assert len(prov["git_commit"]) == 40 or prov["git_commit"] == "unknown"


def test_tex_escape() -> None:
    assert tex_escape("a_b & 50% $x #1 {y} ~^\\ ± Δ –") == (
        r"a\_b \& 50\% \$x \#1 \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{} "
        r"\ensuremath{\pm} \ensuremath{\Delta} --"
    )


def test_efficiency_table(tmp_path: Path) -> None:
    def js(name: str, obj: object) -> Path:
        p = tmp_path / name
        p.write_text(json.dumps(obj))
        return p

    def params_json(method: str, trainable: int, encoder: int) -> Path:
        # The keys `mopeft params --json` writes (the reader takes exactly these).
        obj = {"method": method, "trainable": trainable, "sam_reference_total": 1_000_000, "total": 1_060_000}
        return js(f"{method}.json", obj | {"encoder_peft": encoder})

    params = [
        load_params(params_json("full_ft", 1_000_000, 0)),
        load_params(params_json("decoder_ft", 40_000, 0)),
        load_params(params_json("lora", 50_000, 2_400)),
        load_params(params_json("vpt", 1_000, 200)),
    ]
    bench_rows = [
        {"method": "full_ft", "train_ms": 200, "infer_ms": 50, "train_pct": 100.0, "infer_pct": 100.0},
        {"method": "lora", "train_ms": 110, "infer_ms": 52, "train_pct": 55.0, "infer_pct": 104.0},
    ]
    bench = load_bench(js("bench.json", {"results": bench_rows}))
    assert bench == {
        "full_ft": {"train_pct": 100.0, "infer_pct": 100.0},
        "lora": {"train_pct": 55.0, "infer_pct": 104.0},
    }
    flops = dict([load_flops(js("f.json", {"method": "lora", "image_encoder_gmac": 371.98}))])
    df, _display, notes = efficiency_table(params, bench, flops)
    assert list(df["method"]) == ["full_ft", "decoder_ft", "lora", "vpt"]  # the configured methods only
    lora = df.set_index("method").loc["lora"]
    assert (
        lora["params_pct"],
        lora["params_encoder_pct"],
        lora["params_pct_paper"],
        lora["params_pct_diff"],
    ) == (5.0, 0.24, 0.24, 0.0)
    assert (lora["train_time_pct"], lora["train_time_pct_paper"], lora["train_time_pct_diff"]) == (
        55.0,
        55.0,
        0.0,
    )
    assert (lora["inference_time_pct"], lora["inference_time_pct_diff"], lora["encoder_gmac"]) == (
        104.0,
        0.0,
        371.98,
    )
    vpt = df.set_index("method").loc["vpt"]
    assert (vpt["params_pct"], vpt["params_pct_diff"]) == (0.1, -0.06)  # encoder 0.02 vs the study's 0.08
    full = df.set_index("method").loc["full_ft"]
    assert (full["params_pct"], full["params_pct_diff"], full["train_time_pct_diff"]) == (100.0, 0.0, 0.0)
    assert math.isnan(df.set_index("method").loc["decoder_ft", "params_pct_paper"])
    assert any("exclude the mask decoder" in n for n in notes)
    with pytest.raises(ValueError, match=r"bad\.json: no 'trainable'"):
        load_params(js("bad.json", {"method": "lora"}))
    with pytest.raises(ValueError, match=r"old\.json: expected the JSON object"):  # one shape only
        load_bench(js("old.json", bench_rows))


def _spec(key: str, name: str, domain: str, tasks: tuple[str, ...] = ()) -> DatasetSpec:
    return DatasetSpec(
        key=key,
        name=name,
        domain=domain,
        classes=("a", "b"),
        sources=(),
        expected_test=118,
        tasks=tasks,
        sensor="Visible Spectrum",
        segment_size="Medium",
        num_classes_label="2 (Binary)",
        vocabulary="Generic",
        task_description="Endoscopy",
        notes=("a note",),
    )


def test_dataset_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs = [
        _spec("paxray4", "PAXRay-4", "Medical Imaging", ("lungs", "bones", "mediastinum", "diaphragm")),
        _spec("kvasir_instrument", "Kvasir-Instr.", "Medical Imaging"),
        _spec("fair1m", "FAIR1M", "Det"),
    ]
    monkeypatch.setattr(dataset_tables, "_specs", lambda: (specs, ["cwfid"]))
    meta = tmp_path / "kvasir_instrument" / "meta.json"
    meta.parent.mkdir()
    meta.write_text(json.dumps({"num_classes": 2, "counts": {"train": 8, "test": 5}, "synthetic": True}))
    pax = tmp_path / "paxray4" / "meta.json"
    pax.parent.mkdir()
    pax.write_text(
        json.dumps(
            {
                "dataset": "paxray4",
                "num_classes": 2,
                "synthetic": False,
                "counts": {
                    t: {"train": 2, "test": 3} for t in ("lungs", "bones", "mediastinum", "diaphragm")
                },
            }
        )
    )
    out = tmp_path / "t42"
    assert (
        cli_main(["table", "4.2", "--meta", str(meta), str(pax), "--config", "c.yaml", "--out", str(out)])
        == 0
    )
    df = pd.read_csv(out.with_suffix(".csv"))
    assert list(df["dataset"]) == ["kvasir_instrument", "paxray4"]  # the study's order; FAIR-1M left out
    assert df.set_index("dataset").loc[
        "kvasir_instrument", ["test_images", "prepared_test_images", "prepared_data"]
    ].tolist() == [118, "5", "synthetic"]
    assert df.set_index("dataset").loc["paxray4", "prepared_test_images"] == "3 ×4 tasks"
    md = out.with_suffix(".md").read_text()
    assert "Data: mixed" in md and "not importable (rows omitted): cwfid" in md
    out = tmp_path / "t41"
    assert cli_main(["table", "4.1", "--config", "c.yaml", "--out", str(out)]) == 0
    df = pd.read_csv(out.with_suffix(".csv"))
    assert df.iloc[0][["sensor", "num_classes", "classes_ours"]].tolist() == [
        "Visible Spectrum",
        "2 (Binary)",
        2,
    ]
    assert df["classes_prepared"].isna().all()


def test_kfold_datasets_are_flagged_in_csv_display_and_notes(tmp_path: Path) -> None:
    plain = _cell(tmp_path, "kvasir_instrument", "mopeft", 70.0)
    kfold = _cell(tmp_path, "dark_zurich", "mopeft", 30.0)
    data = json.loads(kfold.read_text())
    data.update(combine="pool", units={"fold0": {"miou": 28.0}, "fold1": {"miou": 33.0}})
    kfold.write_text(json.dumps(data))
    df, display, notes, _ = main_table(load_cells([plain, kfold]), TABLE_4_3)
    assert _row(df, "dark_zurich")["train_protocol"] == "kfold-2"
    assert _row(df, "kvasir_instrument")["train_protocol"] == ""
    names = dict(zip(df["dataset"], display["Dataset"], strict=True))
    assert names["dark_zurich"] == "Dark Zurich †" and names["kvasir_instrument"] == "Kvasir-Instr."
    assert any(n.startswith("† No labelled train split") and "dark_zurich: k=2" in n for n in notes)
