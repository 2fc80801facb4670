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
        "mopeft_logit",  # this project's addition, beside the study's seven
    }
    from mopeft.report.registry import TABLES

    studies = {TABLES[s["table"]].option: s for s in STUDY["ablations"]["studies"]}
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


def test_each_ablation_includes_the_methods_default():
    """The default value is the method's (registry), never restated in the config; each ablation
    grid contains it, so the `default` cell is one of its columns."""
    from mopeft.methods import METHODS
    from mopeft.report.registry import TABLES

    for cfg in (STUDY, DEMO):
        defaults = METHODS[cfg["ablations"]["method"]].defaults
        for study in cfg["ablations"]["studies"]:
            assert "default" not in study and "option" not in study
            assert defaults[TABLES[study["table"]].option] in study["values"], study["name"]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["main"].update(methods=["lora", "lorra"]),
            "config main.methods: unknown method(s) ['lorra']",
        ),
        (
            lambda c: c.update(datasets=[*c["datasets"], "kvasir"]),
            "config datasets: unknown dataset(s) ['kvasir']",
        ),
        (
            lambda c: c["ablations"]["studies"][0].update(table="4.3"),
            "config ablations.studies[0] (lora_rank).table: unknown ablation table ['4.3']; known: 4.6, 4.7",
        ),
        (lambda c: c["efficiency"].update(methods=["full_fft"]), "config efficiency.methods: unknown method"),
    ],
    ids=["method", "dataset", "table", "efficiency"],
)
def test_config_membership_errors_name_the_key(tmp_path, edit, message):
    """Membership is checked against the registries, with one message naming the key at fault."""
    wf = workflow_copy(tmp_path)
    bad = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    edit(bad)
    (wf / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = run_snakemake(wf, "-n", "--configfile", "bad.yaml")
    assert res.returncode != 0
    assert message in res.out, res.out[-2000:]


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
    assert (
        "config ablations.studies[0] (lora_rank).datasets: unknown segmentation dataset(s) ['isaid']"
        in res.out
    )
