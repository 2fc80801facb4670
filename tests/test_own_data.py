"""Own data in two commands (README "Run the benchmark on your own dataset"): a file of only
`custom_datasets` + `datasets`, merged over the study's config/config.yaml, plans with the README's
commands and runs on a CPU with config/own-data-cpu.yaml. The study's sections that name datasets
the run does not list (FAIR-1M detection, the MESS ablations, Figure 4.2's datasets) are left out
with one line saying so, never refused; asking for a table that was left out says which dataset
is "not listed in `datasets`"."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from PIL import Image
from workflow_helpers import run_snakemake, workflow_copy

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Run the benchmark on your own dataset"
NOTE = "config: detection skipped: 'fair1m' is not listed in `datasets`"
BUILT_TABLES = {"4_1", "4_2", "4_3", "4_4", "4_5"}  # 4.6-4.8 (ablations) and A.1 (FAIR-1M) are left out


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    return text[start : text.index("\n## ", start + len(SECTION))]


def _user_file() -> str:
    """The README's `my.yaml`, exactly as its heredoc writes it."""
    match = re.search(r"^cat > my\.yaml <<'EOF'\n(.*?)^EOF$", _section(), flags=re.S | re.M)
    assert match, "README's own-data section has no `cat > my.yaml <<'EOF'` block"
    return match.group(1)


def _commands() -> dict[str, list[str]]:
    """The README's run commands (arguments after `snakemake`), by where they run."""
    lines = [ln for ln in _section().splitlines() if ln.startswith(".venv/bin/snakemake ")]
    commands = {"slurm" if "--profile" in ln else "cpu": shlex.split(ln)[1:] for ln in lines}
    assert set(commands) == {"cpu", "slurm"}, lines
    return commands


def _with_user_data(wf: Path, extra: dict | None = None) -> str:
    """my.yaml in the copy, and the folders it names: a few images with a bright rectangle and its
    mask (class 1) on a dark background (class 0), split 8 / 2 by the file's test_fraction."""
    text = _user_file()
    config = yaml.safe_load(text)
    rng = np.random.default_rng(0)
    for entry in config["custom_datasets"].values():
        for folder in (entry["images"], entry["masks"]):
            (wf / folder).mkdir(parents=True, exist_ok=True)
        for i in range(10):
            mask = np.zeros((40, 48), dtype=np.uint8)
            top, left = rng.integers(2, 18), rng.integers(2, 24)
            mask[top : top + 16, left : left + 20] = 1
            image = (mask[..., None] * 150 + rng.integers(0, 60, (40, 48, 3))).astype(np.uint8)
            Image.fromarray(image).save(wf / entry["images"] / f"img{i}.png")
            Image.fromarray(mask).save(wf / entry["masks"] / f"img{i}.png")
    if extra:
        text += yaml.safe_dump(extra)
    (wf / "my.yaml").write_text(text)
    return "my.yaml"


def _jobs(out: str) -> tuple[Counter, set[str]]:
    """Rule counts and output files of a `snakemake -n` listing."""
    rules = Counter(re.findall(r"^(?:local)?rule (\w+):$", out, flags=re.M))
    outputs: set[str] = set()
    for line in re.findall(r"^    output: (.+)$", out, flags=re.M):
        outputs.update(p.strip() for p in line.split(","))
    return rules, outputs


def _tables(outputs: set[str], run: str) -> set[str]:
    return {m.group(1) for p in outputs if (m := re.fullmatch(rf"results/{run}/tables/table_(\w+)\.csv", p))}


def test_the_readme_user_file_holds_only_custom_datasets_and_datasets():
    assert set(yaml.safe_load(_user_file())) == {"custom_datasets", "datasets"}
    assert "--configfile config/own-data-cpu.yaml my.yaml" in shlex.join(_commands()["cpu"])


@pytest.mark.parametrize(("where", "run"), [("cpu", "own_data"), ("slurm", "study")])
def test_the_readme_commands_plan_the_user_file_without_fair1m(tmp_path, where, run):
    """Both commands plan the user's dataset through every main method, Tables 4.1-4.5 and the
    figures; detection and the study's ablations are left out in one line, not refused."""
    if where == "slurm":
        pytest.importorskip("snakemake_executor_plugin_slurm")
    wf = workflow_copy(tmp_path, profile=where == "slurm")
    _with_user_data(wf)
    res = run_snakemake(wf, *_commands()[where], "-n")
    assert res.returncode == 0, res.out[-3000:]
    rules, outputs = _jobs(res.out)
    assert "detect" not in rules and "raw" not in rules, rules  # no registered dataset is fetched
    main = yaml.safe_load((ROOT / "config/config.yaml").read_text())["main"]["methods"]
    assert rules["train"] == len(main), rules
    assert {p.split("/")[3] for p in outputs if "/cells/" in p} == {"my_cells"}
    assert _tables(outputs, run) == BUILT_TABLES
    for figure in ("gate_frequency", "examples", "training_curves"):
        assert f"results/{run}/figures/{figure}.png" in outputs, figure
    # one line says what was left out, and why
    notes = [ln for ln in res.out.splitlines() if ln.startswith("config: ")]
    assert len(notes) == 1 and notes[0].startswith(NOTE), notes
    if where == "slurm":  # the study's ablations are in config/config.yaml, not in own-data-cpu.yaml
        assert "ablations lora_rank, prefix_length, adapter_dmid (Tables 4.6, 4.7, 4.8) skipped" in notes[0]
    assert "figures.gate_frequency on the run's datasets (my_cells)" in notes[0]


def test_a_study_keeps_its_listed_datasets_and_the_resource_plan_agrees(tmp_path, monkeypatch):
    """An ablation naming the user's dataset and an unlisted registered one runs on the listed one
    only, and `mopeft plan`'s job list (run_jobs) is the DAG's GPU jobs, one for one."""
    from mopeft.plan.jobs import load_config, run_jobs

    wf = workflow_copy(tmp_path)
    study = {"name": "lora_rank", "table": "4.6", "values": [8, 16], "datasets": ["my_cells", "isaid"]}
    user = _with_user_data(wf, {"ablations": {"method": "mopeft", "studies": [study]}})
    res = run_snakemake(wf, *_commands()["cpu"], "-n")
    assert res.returncode == 0, res.out[-3000:]
    assert "ablation lora_rank (Table 4.6) on my_cells only: isaid not listed in `datasets`" in res.out
    _, outputs = _jobs(res.out)
    assert _tables(outputs, "own_data") == BUILT_TABLES | {"4_6"}
    cells = "results/own_data/cells/{dataset}/{method}/{variant}/seed{seed}"
    paths = {
        "train": cells + "/units/{unit}/model.safetensors",
        "evaluate": cells + "/units/{unit}/eval/metrics.json",
    }
    monkeypatch.chdir(wf)  # the folder dataset's files are counted where the config names them
    config = load_config([Path("config/config.yaml"), Path("config/own-data-cpu.yaml"), Path(user)])
    planned = {paths[j.rule].format(**j.__dict__) for j in run_jobs(config)}
    in_dag = {p for p in outputs if p.endswith(("/model.safetensors", "/eval/metrics.json"))}
    assert planned == in_dag, (sorted(planned - in_dag)[:5], sorted(in_dag - planned)[:5])
    assert any("/my_cells/mopeft/r16/" in p for p in in_dag)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            "a1",
            "config detection.dataset: 'fair1m' is not listed in `datasets`, so "
            "results/own_data/tables/table_a1.csv has no cells; list it in `datasets`",
        ),
        ("4_6", "config ablations.studies[0] (lora_rank).datasets: isaid, "),
    ],
    ids=["detection", "ablation"],
)
def test_asking_for_a_left_out_table_says_not_listed_in_datasets(tmp_path, table, message):
    """A target the run cannot build is an error (the table rule's inputs, Workflow.table_inputs),
    naming the registered dataset the run does not list ("not listed in `datasets`", not
    "unknown") and the config key."""
    from mopeft.plan.jobs import load_config
    from mopeft.plan.workflow import ConfigError, Workflow

    user = _with_user_data(tmp_path)
    # the study's ablations (own-data-cpu.yaml has none): config/config.yaml + the user's file
    config = load_config([ROOT / "config/config.yaml", tmp_path / user])
    config["run"] = "own_data"
    wf = Workflow(config, schema=ROOT / "workflow/schemas/config.schema.yaml", root=tmp_path)
    assert f"results/own_data/tables/table_{table}.csv" not in wf.final_outputs()  # `all` skips it
    with pytest.raises(ConfigError) as err:
        wf.table_inputs(SimpleNamespace(name=table))
    assert message in str(err.value)
    assert "not listed in `datasets`" in str(err.value) and "unknown" not in str(err.value)


@pytest.mark.slow
def test_the_readme_cpu_command_runs_the_user_file_end_to_end(tmp_path):
    """The README's CPU command in a scratch copy: Tables 4.1-4.5 with the user's dataset in the
    main tables under "Custom", the figures, and nothing of FAIR-1M or the ablations."""
    import pandas as pd

    wf = workflow_copy(tmp_path, package=True)
    _with_user_data(wf)
    args = _commands()["cpu"]
    res = run_snakemake(wf, *args, "--show-failed-logs", timeout=1800)
    assert res.returncode == 0, res.out[-6000:]
    tables = wf / "results/own_data/tables"
    assert {p.stem.removeprefix("table_") for p in tables.glob("table_*.csv")} == BUILT_TABLES
    for name in ("4_3", "4_4"):
        df = pd.read_csv(tables / f"table_{name}.csv")
        row = df[df["dataset"] == "my_cells"].iloc[0]
        assert row["domain"] == "Custom", row
    for figure in ("gate_frequency", "examples", "training_curves"):
        assert (wf / f"results/own_data/figures/{figure}.png").stat().st_size > 0, figure
    assert not (wf / "data/raw/fair1m").exists()
    plan = run_snakemake(wf, *args, "-n")
    assert plan.returncode == 0 and "Nothing to be done" in plan.out, plan.out[-3000:]
