"""The Snakemake DAG: the study's full grid is planned, a single cell plans only its own jobs,
the profile resolves from the checkout root, and `snakemake --lint` is clean."""

from __future__ import annotations

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
    full = run_snakemake(wf, "-n", "--configfile", "config/demo.yaml")
    assert target in _planned(full.out)[1]  # part of the run's final outputs


def test_lint_is_clean(tmp_path):
    res = run_snakemake(ROOT, "--lint")
    assert res.returncode == 0, res.out[-3000:]
    assert "Congratulations" in res.out


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
        "train": cells + "/units/{unit}/model.pt",
        "evaluate": cells + "/units/{unit}/eval/metrics.json",
        "detect": cells + "/detections.json",
    }
    planned = {paths[j.rule].format(**j.__dict__) for j in run_jobs(STUDY)}
    in_dag = {p for p in outputs if p.endswith(("/model.pt", "/eval/metrics.json", "/detections.json"))}
    assert planned == in_dag, (sorted(planned - in_dag)[:5], sorted(in_dag - planned)[:5])
