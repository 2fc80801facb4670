"""What the report says about itself (issue 11): Table 4.5's provenance names what its
measurements ran on and explains full FT's share; the report's front page says when the data are
synthetic and the base weights are not SAM's."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import yaml

from mopeft.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_table_4_5_says_what_it_measured_on_and_explains_full_ft(tmp_path, capsys):
    params = []
    for method in ("full_ft", "lora"):
        assert main(["params", "--arch", "vit_b", "--method", method, "--num-classes", "10", "--json"]) == 0
        params.append(tmp_path / f"{method}.json")
        params[-1].write_text(capsys.readouterr().out)
    rows = [{"method": m, "train_pct": p, "infer_pct": p} for m, p in (("full_ft", 100.0), ("lora", 55.0))]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"config": {"num_classes": 10}, "results": rows}))
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"run": "t", "efficiency": {"dataset": "floodnet"}}))
    argv = ["table", "4.5", "--params", *map(str, params), "--bench", str(bench), "--config", str(config)]
    assert main([*argv, "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t.md").read_text()
    data = next(line for line in md.splitlines() if line.startswith("- Data:"))
    assert "synthetic inputs" in data and "K = 10" in data and "floodnet" in data
    assert "Full FT's 99.41% is of the stock SAM (vit_b, 93,735,472 parameters)" in md
    assert "prompt encoder (6,220) stays frozen" in md


def _front_page(config: dict) -> str:
    """workflow/report/workflow.rst rendered as Snakemake renders it (Jinja2, these options)."""
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    snakemake = type("Snakemake", (), {"config": config})
    return env.from_string((ROOT / "workflow/report/workflow.rst").read_text()).render(snakemake=snakemake)


def test_report_front_page_says_when_data_are_synthetic_and_weights_not_sams():
    study = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    demo = {**study, **yaml.safe_load((ROOT / "config/demo.yaml").read_text())}
    page = _front_page(demo)
    assert "**Synthetic data.**" in page and "**Tiny SAM.**" in page and "weights/sam_tiny" in page
    page = _front_page(study)
    assert "Synthetic" not in page and "Tiny SAM" not in page and "Random" not in page
    assert "Base weights: ``" + study["model"]["weights"]["path"] in page
    page = _front_page({**study, "model": {**study["model"], "weights": None}})
    assert "**Random weights.**" in page
