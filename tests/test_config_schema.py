"""The config schema: both shipped configs are valid, a misspelt key fails with a clear message."""

from __future__ import annotations

import csv
from pathlib import Path

import jsonschema
import pytest
import yaml
from workflow_helpers import run_snakemake, workflow_copy

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
STUDY = yaml.safe_load((ROOT / "config/config.yaml").read_text())
DEMO = yaml.safe_load((ROOT / "config/demo.yaml").read_text())


@pytest.mark.parametrize("cfg", [STUDY, DEMO], ids=["study", "demo"])
def test_shipped_configs_are_valid(cfg):
    jsonschema.validate(cfg, SCHEMA)


def _keys(obj, prefix=""):
    if not isinstance(obj, dict):
        return set()
    out = set()
    for k, v in obj.items():
        out.add(prefix + k)
        out |= _keys(v, prefix + k + ".")
    return out


def test_demo_overrides_every_study_key():
    """`--configfile config/demo.yaml` merges over config/config.yaml: every study key must be set."""
    missing = _keys(STUDY) - _keys(DEMO)
    # weights is a mapping in the study and null in the demo (null replaces the whole mapping)
    missing = {k for k in missing if not k.startswith("model.weights.")}
    assert not missing, f"config/demo.yaml lacks {sorted(missing)}"


def test_every_object_forbids_unknown_keys():
    def walk(node, path="schema"):
        if isinstance(node, dict):
            if node.get("type") == "object" or ("properties" in node and "type" in node):
                assert node.get("additionalProperties") is False, f"{path}: additionalProperties not false"
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")

    walk(SCHEMA)


def test_study_covers_the_thesis_grid():
    with open(ROOT / "results/paper/main_results.csv") as fh:
        mess = [row["dataset"] for row in csv.DictReader(fh)]
    assert STUDY["datasets"] == [*mess, "fair1m"]
    assert set(STUDY["main"]["methods"]) == {
        "baseline",
        "decoder_ft",
        "lora",
        "vpt_deep",
        "vpt",
        "adapter",
        "mopeft",
    }
    studies = {s["option"]: s for s in STUDY["ablations"]["studies"]}
    assert studies["r"]["values"] == [4, 8, 16]
    assert studies["length"]["values"] == [5, 10, 20, 25]
    assert studies["dmid"]["values"] == [48, 64, 128, 256]
    for name, option in (
        ("ablation_lora_rank", "r"),
        ("ablation_prefix_length", "length"),
        ("ablation_adapter_dmid", "dmid"),
    ):
        with open(ROOT / f"results/paper/{name}.csv") as fh:
            assert studies[option]["datasets"] == [row["dataset"] for row in csv.DictReader(fh)]
    assert "full_ft" in STUDY["efficiency"]["methods"]
    assert STUDY["detection"]["methods"] == ["baseline", "vpt", "vpt_deep", "lora"]


def test_ablation_defaults_match_the_method():
    """A variant equal to the method's default is the `default` cell: the two must agree."""
    from mopeft.methods import METHODS

    for cfg in (STUDY, DEMO):
        defaults = METHODS[cfg["ablations"]["method"]].defaults
        for study in cfg["ablations"]["studies"]:
            assert study["default"] == defaults[study["option"]], study["name"]


def test_study_weights_hash_matches_the_package():
    from mopeft.model.weights import VIT_B_SHA256

    assert STUDY["model"]["weights"]["sha256"] == VIT_B_SHA256


def test_misspelt_key_is_rejected(tmp_path):
    wf = workflow_copy(tmp_path)
    bad = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    bad["training"]["lrr"] = bad["training"].pop("lr")
    (wf / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = run_snakemake(wf, "-n", "--configfile", "bad.yaml")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "Additional properties are not allowed ('lrr' was unexpected)" in out, out[-2000:]


def test_unknown_ablation_dataset_is_rejected(tmp_path):
    wf = workflow_copy(tmp_path)
    bad = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    bad["ablations"]["studies"][0]["datasets"] = ["isaid"]  # not among the demo's datasets
    (wf / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = run_snakemake(wf, "-n", "--configfile", "bad.yaml")
    assert res.returncode != 0
    assert "are not segmentation datasets" in res.stdout + res.stderr
