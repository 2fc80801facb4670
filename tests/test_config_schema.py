"""The config schema: both shipped configs are valid, a misspelt key fails with a clear message."""

from __future__ import annotations

import csv
import re
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
    """An "unknown" dataset is a name neither registered nor declared in custom_datasets."""
    wf = workflow_copy(tmp_path)
    bad = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    bad["ablations"]["studies"][0]["datasets"] = ["kvasir_instrument", "isiad"]  # misspelt isaid
    (wf / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = run_snakemake(wf, "-n", "--configfile", "bad.yaml")
    assert res.returncode != 0
    key = "config ablations.studies[0] (lora_rank).datasets"
    assert f"{key}: unknown dataset(s) ['isiad']; known: " in res.out, res.out[-2000:]


def _planned_tables(out: str, run: str) -> set[str]:
    return set(re.findall(rf"results/{run}/tables/table_(\w+)\.csv", out))


def test_a_registered_but_unlisted_ablation_dataset_skips_the_study_in_one_line(tmp_path):
    """isaid is registered, only not in the demo's `datasets`: the study is left out (its table
    is not planned) and one line says why, where it used to be an "unknown" error."""
    wf = workflow_copy(tmp_path)
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    cfg["ablations"]["studies"][0]["datasets"] = ["isaid"]
    cfg["figures"]["gate_frequency"]["datasets"] = ["floodnet", "isaid"]
    (wf / "mine.yaml").write_text(yaml.safe_dump(cfg))
    res = run_snakemake(wf, "-n", "--configfile", "mine.yaml")
    assert res.returncode == 0, res.out[-3000:]
    notes = [ln for ln in res.out.splitlines() if ln.startswith("config: ")]
    assert notes == [
        "config: ablation lora_rank (Table 4.6) skipped: none of its datasets is listed in `datasets`; "
        "figures.gate_frequency without isaid: not listed in `datasets` "
        "(list them in `datasets` to run them)"
    ], notes
    assert _planned_tables(res.out, "demo") == {"4_1", "4_2", "4_3", "4_4", "4_5", "4_7", "4_8", "a1"}
    assert "/isaid/" not in res.out


def test_the_detection_dataset_in_an_ablation_is_refused(tmp_path):
    wf = workflow_copy(tmp_path)
    bad = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    bad["ablations"]["studies"][0]["datasets"] = ["fair1m"]
    (wf / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = run_snakemake(wf, "-n", "--configfile", "bad.yaml")
    assert res.returncode != 0
    assert (
        "config ablations.studies[0] (lora_rank).datasets: 'fair1m' is detection.dataset, "
        "not a segmentation dataset" in res.out
    ), res.out[-2000:]


def test_empty_method_lists_are_valid_and_build_no_table(tmp_path):
    """The schema and the workflow agree: `detection: {methods: []}` and `efficiency: {methods: []}`
    are valid, and Tables A.1 and 4.5 are then not planned (nothing is said: nothing was trimmed)."""
    cfg = yaml.safe_load((ROOT / "config/demo.yaml").read_text())
    cfg["detection"]["methods"] = []
    cfg["efficiency"]["methods"] = []
    jsonschema.validate(cfg, SCHEMA)
    wf = workflow_copy(tmp_path)
    (wf / "mine.yaml").write_text(yaml.safe_dump(cfg))
    res = run_snakemake(wf, "-n", "--configfile", "mine.yaml")
    assert res.returncode == 0, res.out[-3000:]
    assert _planned_tables(res.out, "demo") == {"4_1", "4_2", "4_3", "4_4", "4_6", "4_7", "4_8"}
    assert "rule detect:" not in res.out and "rule bench:" not in res.out
    assert not [ln for ln in res.out.splitlines() if ln.startswith("config: ")]


@pytest.mark.parametrize("run", ["slurm", "paper"])
def test_run_names_of_other_folders_are_refused(tmp_path, run):
    """`slurm`: its rule logs (logs/<run>/) would mix with the SLURM profile's logs/slurm/;
    `paper`: results/paper/ holds the thesis's tables. The schema refuses them for `mopeft plan`."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**DEMO, "run": run}, SCHEMA)
    wf = workflow_copy(tmp_path)
    res = run_snakemake(wf, "-n", "--configfile", "config/demo.yaml", "--config", f"run={run}")
    assert res.returncode != 0
    assert f"config run: {run!r} is reserved (" in res.out, res.out[-2000:]
    assert "choose another run name" in res.out


def test_own_data_cpu_config_is_valid_and_names_no_dataset():
    """config/own-data-cpu.yaml merges over the study config (valid) and leaves every
    dataset-naming key to the study or the user's file (its ablations: none)."""
    from mopeft.plan.jobs import load_config

    own = yaml.safe_load((ROOT / "config/own-data-cpu.yaml").read_text())
    assert not {"datasets", "custom_datasets", "detection", "figures"} & set(own)
    assert own["ablations"]["studies"] == [] and own["model"] == DEMO["model"]
    assert own["training"]["steps"] == DEMO["training"]["steps"]
    load_config(
        [ROOT / "config/config.yaml", ROOT / "config/own-data-cpu.yaml"],
        ROOT / "workflow/schemas/config.schema.yaml",
    )
