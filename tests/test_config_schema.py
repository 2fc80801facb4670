"""The config schema: both shipped configs are valid, a misspelt key fails with a clear message,
and the workflow's checks (mopeft.plan.workflow, called directly: no Snakemake start) name the key
at fault. One test runs `snakemake -n` to show the Snakefile calls them."""

from __future__ import annotations

import copy
import csv
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml
from workflow_helpers import run_snakemake, workflow_copy

from mopeft.plan.jobs import merged
from mopeft.plan.workflow import ConfigError, Workflow

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "workflow/schemas/config.schema.yaml"
SCHEMA = yaml.safe_load(SCHEMA_PATH.read_text())
STUDY = yaml.safe_load((ROOT / "config/config.yaml").read_text())
DEMO = yaml.safe_load((ROOT / "config/demo.yaml").read_text())


def demo_with(edit: Callable[[dict], object] | None = None) -> dict:
    """config/demo.yaml, edited, as the run gets it: merged over config/config.yaml (the
    Snakefile's configfile), exactly as `snakemake --configfile config/demo.yaml` merges them."""
    cfg = copy.deepcopy(DEMO)
    if edit is not None:
        edit(cfg)
    return merged(STUDY, cfg)


def workflow(config: dict, tmp_path: Path) -> Workflow:
    """The Workflow common.smk builds, checked against the schema (a scratch root: no plan)."""
    return Workflow(config, schema=SCHEMA_PATH, root=tmp_path)


def planned_tables(wf: Workflow) -> set[str]:
    """The tables `rule all` asks for, by wildcard (`4_3`)."""
    return set(re.findall(rf"results/{wf.run}/tables/table_(\w+)\.csv", " ".join(wf.final_outputs())))


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
    with open(ROOT / "paper/main_results.csv") as fh:
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
        with open(ROOT / f"paper/{name}.csv") as fh:
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
        (
            lambda c: c["detection"].update(methods=["vtp"]),
            "config detection.methods: unknown method(s) ['vtp']",
        ),
        (
            lambda c: c["ablations"].update(method="lorra"),
            "config ablations.method: unknown method(s) ['lorra']",
        ),
        (
            lambda c: c["efficiency"].update(dataset="kvasir"),
            "config efficiency.dataset: unknown dataset ['kvasir']",
        ),
        (
            lambda c: c["detection"].update(dataset="fair2m"),
            "config detection.dataset: unknown dataset ['fair2m']",
        ),
        (
            lambda c: c["ablations"].update(method="vpt"),
            "config ablations.studies[0] (lora_rank): table 4.6 varies 'r', which method vpt does not have "
            "(its options: length)",
        ),
        (
            lambda c: c["figures"]["gate_frequency"].update(datasets=["floodnet", "fair1m"]),
            "config figures.gate_frequency.datasets: 'fair1m' is detection.dataset, "
            "not a segmentation dataset",
        ),
    ],
    ids=[
        "method",
        "dataset",
        "table",
        "efficiency",
        "detection",
        "ablation-method",
        "efficiency-dataset",
        "detection-dataset",
        "option",
        "figure-detection",
    ],
)
def test_config_membership_errors_name_the_key(tmp_path, edit, message):
    """Membership is checked against the registries, with one message naming the key at fault."""
    with pytest.raises(ConfigError) as err:
        workflow(demo_with(edit), tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)  # one line


def test_the_snakefile_checks_the_config(tmp_path):
    """End to end: `snakemake -n` builds the Workflow, so a bad config stops the DAG with its line."""
    wf = workflow_copy(tmp_path)
    bad = copy.deepcopy(DEMO)
    bad["main"]["methods"] = ["lora", "lorra"]
    (wf / "bad.yaml").write_text(yaml.safe_dump(bad))
    res = run_snakemake(wf, "-n", "--configfile", "bad.yaml")
    assert res.returncode != 0
    assert "config main.methods: unknown method(s) ['lorra']" in res.out, res.out[-2000:]


def test_study_weights_hash_matches_the_package():
    from mopeft.model.weights import VIT_B_SHA256

    assert STUDY["model"]["weights"]["sha256"] == VIT_B_SHA256


def test_misspelt_key_is_rejected(tmp_path):
    def misspell(cfg: dict) -> None:
        cfg["training"]["lrr"] = cfg["training"].pop("lr")

    with pytest.raises(ConfigError) as err:
        workflow(demo_with(misspell), tmp_path)
    message = "config key training: Additional properties are not allowed ('lrr' was unexpected)"
    assert message in str(err.value)


def test_the_schemas_defaults_are_written_into_the_config(tmp_path):
    """As Snakemake's `validate` did: a key the config leaves out gets the schema's default, so the
    run's config.yaml and the resource plan's digest see the same config (mopeft plan fills them too)."""
    from mopeft.plan.jobs import validate_config

    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "default": {}, "properties": {"b": {"type": "integer", "default": 3}}}
        },
    }
    config: dict = {}
    validate_config(config, schema)
    assert config == {"a": {"b": 3}}
    config = {"a": {"b": 4}}
    validate_config(config, schema)
    assert config == {"a": {"b": 4}}


def test_seeds_given_on_the_command_line_become_integers(tmp_path):
    """`--config seeds=[0,1]` arrives as strings; the cells are named by integers."""
    config = demo_with(lambda c: c.update(seeds=["0", "1"]))
    wf = workflow(config, tmp_path)
    assert config["seeds"] == [0, 1]
    assert (
        wf.cell_metrics("floodnet", "lora")[1]
        == "results/demo/cells/floodnet/lora/default/seed1/metrics.json"
    )


def test_unknown_ablation_dataset_is_rejected(tmp_path):
    """An "unknown" dataset is a name neither registered nor declared in custom_datasets."""

    def misspell(cfg: dict) -> None:
        cfg["ablations"]["studies"][0]["datasets"] = ["kvasir_instrument", "isiad"]  # misspelt isaid

    with pytest.raises(ConfigError) as err:
        workflow(demo_with(misspell), tmp_path)
    key = "config ablations.studies[0] (lora_rank).datasets"
    assert f"{key}: unknown dataset(s) ['isiad']; known: " in str(err.value)


def test_a_registered_but_unlisted_ablation_dataset_skips_the_study_in_one_line(tmp_path):
    """isaid is registered, only not in the demo's `datasets`: the study is left out (its table
    is not planned) and one line says why, where it used to be an "unknown" error."""

    def unlisted(cfg: dict) -> None:
        cfg["ablations"]["studies"][0]["datasets"] = ["isaid"]
        cfg["figures"]["gate_frequency"]["datasets"] = ["floodnet", "isaid"]

    wf = workflow(demo_with(unlisted), tmp_path)
    assert wf.grid.note_line() == (
        "config: ablation lora_rank (Table 4.6) skipped: none of its datasets is listed in `datasets`; "
        "figures.gate_frequency without isaid: not listed in `datasets` "
        "(list them in `datasets` to run them)"
    )
    assert planned_tables(wf) == {"4_1", "4_2", "4_3", "4_4", "4_5", "4_7", "4_8", "a1"}
    inputs = [wf.table_inputs(SimpleNamespace(name=t)) for t in planned_tables(wf)]
    assert "/isaid/" not in repr(inputs) + repr(wf.gate_cells())


def test_the_detection_dataset_in_an_ablation_is_refused(tmp_path):
    with pytest.raises(ConfigError) as err:
        workflow(demo_with(lambda c: c["ablations"]["studies"][0].update(datasets=["fair1m"])), tmp_path)
    assert (
        "config ablations.studies[0] (lora_rank).datasets: 'fair1m' is detection.dataset, "
        "not a segmentation dataset" in str(err.value)
    )


def test_empty_method_lists_are_valid_and_build_no_table(tmp_path):
    """The schema and the workflow agree: `detection: {methods: []}` and `efficiency: {methods: []}`
    are valid, and Tables A.1 and 4.5 are then not planned (nothing is said: nothing was trimmed)."""

    def empty(cfg: dict) -> None:
        cfg["detection"]["methods"] = []
        cfg["efficiency"]["methods"] = []

    config = demo_with(empty)
    jsonschema.validate(config, SCHEMA)
    wf = workflow(config, tmp_path)
    assert planned_tables(wf) == {"4_1", "4_2", "4_3", "4_4", "4_6", "4_7", "4_8"}
    assert wf.ap_files() == [] and wf.grid.note_line() == ""
    with pytest.raises(ConfigError, match=r"config detection\.methods is empty"):
        wf.table_inputs(SimpleNamespace(name="a1"))


def test_slurm_is_not_a_run_name(tmp_path):
    """`slurm`: its rule logs (logs/<run>/) would mix with the SLURM profile's logs/slurm/. The
    schema refuses it too (for `mopeft plan`); the workflow says why."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**DEMO, "run": "slurm"}, SCHEMA)
    with pytest.raises(ConfigError) as err:
        workflow(demo_with(lambda c: c.update(run="slurm")), tmp_path)
    assert "config run: 'slurm' is reserved (" in str(err.value)
    assert "choose another run name" in str(err.value)


def test_paper_is_a_run_name_again():
    """The study's CSVs left results/paper/ for paper/: `run: paper` is an ordinary run."""
    jsonschema.validate({**DEMO, "run": "paper"}, SCHEMA)
    assert (ROOT / "paper/main_results.csv").is_file()


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
