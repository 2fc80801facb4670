"""The Snakemake DAG: the study's full grid is planned, a single cell plans only its own jobs,
the profile resolves from the checkout root, `snakemake --lint` and snakefmt are clean, and the
per-job flags and resources of mopeft.plan.workflow (called directly) are what the rules get."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from workflow_helpers import run_snakemake, workflow_copy

from mopeft.data.registry import get_spec
from mopeft.methods.registry import METHOD_SPECS
from mopeft.report.registry import TABLES

ROOT = Path(__file__).resolve().parents[1]
STUDY = yaml.safe_load((ROOT / "config/config.yaml").read_text())


def _planned(out: str) -> tuple[Counter, set[str]]:
    """Rule counts and output files of a `snakemake -n` listing."""
    rules = Counter(re.findall(r"^(?:local)?rule (\w+):$", out, flags=re.M))
    outputs: set[str] = set()
    for line in re.findall(r"^    output: (.+)$", out, flags=re.M):
        outputs.update(p.strip() for p in line.split(","))
    return rules, outputs


def _inputs(out: str) -> set[str]:
    """Every input file of a `snakemake -n` listing."""
    return {p.strip() for line in re.findall(r"^    input: (.+)$", out, flags=re.M) for p in line.split(",")}


def _units(dataset: str) -> list[str]:
    spec = get_spec(dataset)
    if spec.tasks:
        return list(spec.tasks)
    if spec.train_split == "none":
        return [f"fold{i}" for i in range(STUDY["data"]["kfold"])]
    return ["main"]


@pytest.fixture(scope="module")
def study_plan(tmp_path_factory):
    wf = workflow_copy(tmp_path_factory.mktemp("study"))
    res = run_snakemake(wf, "-n")
    assert res.returncode == 0, res.out[-3000:]
    # Code is each job's `code` param (a hash, mopeft.codedeps), never an input file: an edit that
    # changes no number (a comment, the version, a label) replans nothing (tests/test_rerun_code.py).
    assert not [p for p in _inputs(res.out) if p.endswith(".py")]
    return _planned(res.out)


def test_study_dag_has_every_cell(study_plan):
    rules, outputs = study_plan
    seg = [d for d in STUDY["datasets"] if d != STUDY["detection"]["dataset"]]
    expected = set()
    for d in seg:
        for m in STUDY["main"]["methods"]:
            expected.add(f"results/study/cells/{d}/{m}/default/seed0/metrics.json")
    for s in STUDY["ablations"]["studies"]:
        for d in s["datasets"]:
            for v in s["values"]:
                table = TABLES[s["table"]]
                default = METHOD_SPECS[STUDY["ablations"]["method"]].defaults[table.option]
                variant = "default" if v == default else f"{table.variant_label}{v}"
                expected.add(f"results/study/cells/{d}/mopeft/{variant}/seed0/metrics.json")
    missing = expected - outputs
    assert not missing, sorted(missing)[:10]
    assert rules["combine"] == len(expected) == 22 * 8 + 2 * 9 + 3 * 9 + 3 * 8  # 7 methods + MoPEFT-logit
    # every unit of every cell is trained and evaluated
    cells = [p.split("/")[3:6] for p in expected]
    n_units = sum(len(_units(d)) for d, _, _ in cells)
    assert rules["evaluate"] == n_units
    assert rules["train"] == n_units + len(STUDY["detection"]["methods"])
    assert rules["prepare"] == rules["raw"] == len(STUDY["datasets"])
    for m in STUDY["detection"]["methods"]:
        assert f"results/study/cells/fair1m/{m}/default/seed0/ap.json" in outputs
    for m in STUDY["efficiency"]["methods"]:
        assert f"results/study/efficiency/params/{m}.json" in outputs
        assert f"results/study/efficiency/flops/{m}.json" in outputs
    assert "results/study/efficiency/bench.json" in outputs
    for t in ("4_1", "4_2", "4_3", "4_4", "4_5", "4_6", "4_7", "4_8", "a1"):
        assert f"results/study/tables/table_{t}.csv" in outputs
    assert "results/study/figures/gate_frequency.png" in outputs
    assert rules["weights"] == 1


def test_single_demo_cell_plans_only_its_jobs(tmp_path):
    wf = workflow_copy(tmp_path)
    target = "results/demo/cells/dark_zurich/lora/default/seed0/metrics.json"
    res = run_snakemake(wf, target, "-n", "--configfile", "config/demo.yaml")
    assert res.returncode == 0, res.out[-3000:]
    rules, outputs = _planned(res.out)
    # weights: a scratch copy has no weights/ yet (the packaged tiny SAM is copied there first)
    assert rules == Counter(weights=1, raw=1, prepare=1, train=2, evaluate=2, combine=1)
    assert target in outputs


def test_forcing_one_cells_training(tmp_path):
    """`-R train -- <cell>` replans exactly that cell's training (nothing exists yet: all of it)."""
    wf = workflow_copy(tmp_path)
    target = "results/demo/cells/kvasir_instrument/mopeft/r16/seed0/metrics.json"
    res = run_snakemake(wf, "-n", "--configfile", "config/demo.yaml", "-R", "train", "--", target)
    assert res.returncode == 0, res.out[-3000:]
    rules, _ = _planned(res.out)
    assert rules["train"] == 1 and rules["combine"] == 1 and "table" not in rules


@pytest.mark.parametrize("table", ["4_3", "4_4"])
def test_main_table_waits_only_for_the_cells_it_reads(tmp_path, table):
    """Table 4.3 reads baseline/decoderFT/MoPEFT, 4.4 the single PEFTs + MoPEFT
    (mopeft.report.main_tables): asking for one table must not train the other's methods."""
    from mopeft.report.registry import TABLES

    wf = workflow_copy(tmp_path)
    target = f"results/demo/tables/table_{table}.csv"
    res = run_snakemake(wf, "-n", "--configfile", "config/demo.yaml", "--", target)
    assert res.returncode == 0, res.out[-3000:]
    _, outputs = _planned(res.out)
    cell = re.compile(r"results/demo/cells/[^/]+/([^/]+)/default/seed0/metrics\.json")
    cells = {m[1] for p in outputs if (m := cell.fullmatch(p))}
    assert cells == set(TABLES[table.replace("_", ".")].methods)


def _add_registry_line(path: Path, line: str) -> None:
    """Append one entry to a registry's tuple (the line a developer adds by hand)."""
    text = path.read_text()
    end = text.rindex("\n    )\n}")
    path.write_text(text[:end] + "\n" + line + text[end:])


def test_a_new_method_is_one_module_and_one_registry_line(tmp_path):
    """In a scratch copy: a method module + one MethodSpec line, and the DAG plans its cells
    (wildcards, config checks and the CLI's choices all come from the registry)."""
    wf = workflow_copy(tmp_path, package=True)
    (wf / "mopeft/methods/lora_late.py").write_text(
        '"""LoRA under another name (a test double)."""\n\n'
        "from mopeft.methods.lora import LoRA\n\n\n"
        'class LateLoRA(LoRA):\n    name = "lora_late"\n\n\nMETHOD = LateLoRA()\n'
    )
    _add_registry_line(
        wf / "mopeft/methods/registry.py",
        '        MethodSpec("lora_late", "LoRA late", "a test", "mopeft.methods.lora_late", '
        '{"r": 8, "alpha": 8.0}),',
    )
    target = "results/demo/cells/kvasir_instrument/lora_late/default/seed0/metrics.json"
    res = run_snakemake(
        wf, "-n", "--configfile", "config/demo.yaml", "--config", "main={methods: [lora_late]}", "--", target
    )
    assert res.returncode == 0, res.out[-3000:]
    rules, outputs = _planned(res.out)
    assert target in outputs and rules["train"] == 1
    assert "method=lora_late" in res.out


def test_a_new_table_is_one_builder_and_one_registry_line(tmp_path):
    """In a scratch copy: a builder function + one TableSpec line, and the DAG plans the table with
    exactly its cells (and the study CSV it declares) as inputs."""
    wf = workflow_copy(tmp_path, package=True)
    (wf / "mopeft/report/my_table.py").write_text(
        '"""A test table: LoRA only."""\n\n\ndef build(args):\n    raise NotImplementedError\n'
    )
    _add_registry_line(
        wf / "mopeft/report/registry.py",
        '        TableSpec("x1", "mopeft.report.my_table:build", "cells", "X.1", '
        'methods=("lora",), paper=("main_results",)),',
    )
    target = "results/demo/tables/table_x1.csv"
    res = run_snakemake(wf, "-n", "--configfile", "config/demo.yaml", "--", target)
    assert res.returncode == 0, res.out[-3000:]
    _, outputs = _planned(res.out)
    cell = re.compile(r"results/demo/cells/[^/]+/([^/]+)/default/seed0/metrics\.json")
    assert {m[1] for p in outputs if (m := cell.fullmatch(p))} == {"lora"}
    assert target in outputs
    # part of the run's final outputs (`rule all`'s input, as the study plan shows), in the copy
    final = subprocess.run(
        [sys.executable, "-c", FINAL_OUTPUTS, "config/config.yaml", "config/demo.yaml"],
        cwd=wf,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(wf)},
    )
    assert final.returncode == 0, final.stderr[-3000:]
    assert target in final.stdout.split()


# The Workflow of the copy's package (PYTHONPATH) for the config files given: `rule all`'s inputs.
FINAL_OUTPUTS = """
import sys
from pathlib import Path
from mopeft.plan.jobs import load_config
from mopeft.plan.workflow import Workflow
config = load_config([Path(p) for p in sys.argv[1:]])
print(*Workflow(config, schema=Path("workflow/schemas/config.schema.yaml")).final_outputs())
"""


def test_lint_is_clean(tmp_path):
    res = run_snakemake(ROOT, "--lint")
    assert res.returncode == 0, res.out[-3000:]
    assert "Congratulations" in res.out


def test_the_snakefile_and_rules_are_snakefmt_formatted():
    """`make lint` runs the same check (snakefmt is a dev dependency)."""
    pytest.importorskip("snakefmt")
    res = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow/rules/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]


def test_the_snakefile_requires_the_snakemake_pyproject_asks_for():
    """min_version in the Snakefile and the `pipeline` extra's lower bound name the same release."""
    pipeline = re.search(r'"snakemake>=([\d.]+)', (ROOT / "pyproject.toml").read_text())
    required = re.search(r'^min_version\("([\d.]+)"\)', (ROOT / "Snakefile").read_text(), flags=re.M)
    assert pipeline and required and pipeline.group(1) == required.group(1)


def test_slurm_profile_resolves_from_the_checkout_root():
    """`snakemake --cores all --profile slurm` finds ./slurm -> profiles/slurm."""
    assert (ROOT / "slurm").resolve() == (ROOT / "profiles/slurm").resolve()
    profile = yaml.safe_load((ROOT / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    for rule in ("train", "evaluate", "bench"):
        assert profile["set-resources"][rule]["gpu"] == 1
    # The GPU jobs' CPUs come from the rules (the resource plan, else their defaults), so the
    # profile must not pin them; bench keeps the profile's.
    assert profile["set-resources"]["bench"]["cpus_per_task"] >= 1
    assert not any("cpus_per_task" in profile["set-resources"][r] for r in ("train", "evaluate", "detect"))
    pytest.importorskip("snakemake_executor_plugin_slurm")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--cores",
            "all",
            "--profile",
            "slurm",
            "-n",
            "--forceall",  # list every job, whatever a local demo run left in results/
            "--configfile",
            "config/demo.yaml",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "no profile.yaml" not in out
    assert re.search(r"rule train:(?:(?!\nrule ).)*cpus_per_task=1", out, re.S), out[-3000:]


def test_resource_plan_lists_exactly_the_dags_gpu_jobs(study_plan):
    """`mopeft plan` enumerates the jobs from the config; they must be the DAG's, one for one."""
    from mopeft.plan.jobs import run_jobs

    _, outputs = study_plan
    cells = "results/study/cells/{dataset}/{method}/{variant}/seed{seed}"
    paths = {
        "train": cells + "/units/{unit}/model.safetensors",
        "evaluate": cells + "/units/{unit}/eval/metrics.json",
        "detect": cells + "/detections.json",
    }
    planned = {paths[j.rule].format(**j.__dict__) for j in run_jobs(STUDY)}
    ends = ("/model.safetensors", "/eval/metrics.json", "/detections.json")
    in_dag = {p for p in outputs if p.endswith(ends)}
    assert planned == in_dag, (sorted(planned - in_dag)[:5], sorted(in_dag - planned)[:5])


def _demo_workflow(root: Path):
    """The demo's Workflow (mopeft.plan.workflow), as common.smk builds it, reading ``root``."""
    from mopeft.plan.jobs import load_config
    from mopeft.plan.workflow import Workflow

    config = load_config([ROOT / "config/config.yaml", ROOT / "config/demo.yaml"])
    return Workflow(config, schema=ROOT / "workflow/schemas/config.schema.yaml", root=root)


def test_a_cells_flags_come_from_its_wildcards(tmp_path):
    """What the train rule's params are for an ablation cell of a k-fold dataset, without Snakemake."""
    from types import SimpleNamespace

    wf = _demo_workflow(tmp_path)
    cell = SimpleNamespace(run="demo", dataset="dark_zurich", method="mopeft", variant="r16", seed="0")
    assert wf.set_args(cell) == ["--set", "r=16"]
    assert wf.set_args(SimpleNamespace(variant="default")) == []
    assert wf.kfold_args(cell) == ["--kfold", 2] and wf.units("dark_zurich") == ["fold0", "fold1"]
    assert wf.kfold_args(SimpleNamespace(dataset="floodnet")) == []
    assert wf.eval_dirs(cell) == [
        f"results/demo/cells/dark_zurich/mopeft/r16/seed0/units/{u}/eval/metrics.json"
        for u in ("fold0", "fold1")
    ]
    hyper = wf.train_args(cell)
    assert hyper[hyper.index("--steps") + 1] == 60 and "--epochs" not in hyper
    assert wf.method_code("train")(cell) != wf.method_code("train")(SimpleNamespace(method="vpt"))


def test_gpu_jobs_take_their_resources_from_a_plan_made_for_the_config(tmp_path):
    """results/<run>/plan.json (`mopeft plan`) sets a job's resources, times the attempt on a retry;
    a plan made for another config is ignored, and the line the workflow prints says so."""
    from types import SimpleNamespace

    from mopeft.io import write_json
    from mopeft.plan.jobs import config_digest

    job = SimpleNamespace(dataset="floodnet", method="lora", variant="default", seed="0", unit="main")
    record = {"mem_mb": 2100, "runtime_min": 9, "cpus": 3, "workers": 2, "gpu_mem_mb": 1000,
              "gpu_need_bytes": 10**9, "cache_host_mb": 100}  # fmt: skip
    default = _demo_workflow(tmp_path)
    assert default.plan_note == "" and default.train_mem(job, 2) == 4000
    doc = {"config_digest": config_digest(default.config), "gpu": {"label": "H100"}, "jobs": {}}
    doc["jobs"]["train/floodnet/lora/default/seed0/main"] = record
    write_json(tmp_path / "results/demo/plan.json", doc)
    planned = _demo_workflow(tmp_path)
    assert planned.plan_note == "resources of GPU jobs from results/demo/plan.json (H100)"
    assert (planned.train_mem(job, 2), planned.train_runtime(job, 1), planned.train_cpus(job)) == (4200, 9, 3)
    assert planned.cache_host_mb(job, 1) == 100 and planned.train_workers(job) == 0  # the demo sets workers
    write_json(tmp_path / "results/demo/plan.json", {**doc, "config_digest": "another"})
    stale = _demo_workflow(tmp_path)
    assert "was made for another config" in stale.plan_note and stale.train_mem(job, 1) == 2000
