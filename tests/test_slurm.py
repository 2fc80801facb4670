"""The demo DAG through the user-facing SLURM profile, against a real (local) SLURM cluster.

What a cluster user does is what this test does: take the checkout, edit the site block of
profiles/slurm/config.yaml (partitions, account, GPU model) and run `snakemake --profile slurm`
from the checkout root. The cluster (tests/slurm_cluster.py) has no accounting database, so three
settings that a site with slurmdbd does not need are passed on the command line only:
`--slurm-status-command squeue` (no sacct), `--slurm-no-account` and a 2 s first status check
(the profile's 20 s is for shared clusters).

In one run, concurrently: 2 datasets x 2 methods of the demo up to Table 4.4 (17 SLURM jobs over 6
DAG levels) and a test-only rule that outlives its 1-minute limit on attempt 1. A local
`--cores 2` run of the same targets in a second copy gives the reference outputs.

Skipped (with the reason) where SLURM is not installed or we are not root; CI installs it with
scripts/install_slurm.sh first.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_cluster import ClusterUnavailable, SlurmCluster, unavailable_reason

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
PROFILE = Path("profiles/slurm/config.yaml")
TABLE = "results/demo/tables/table_4_4.csv"
PROBE = "results/slurm_timeout_probe/done.txt"
DATASETS = ("floodnet", "deepcrack")
METHODS = ("lora", "vpt")  # both columns of Table 4.4 (it reads no baseline cells)
CONFIG = ["--configfile", "config/demo.yaml", "slurm_demo.yaml"]
# Only for this cluster (no slurmdbd, no accounts) and for speed; never needed with sacct.
TEST_ONLY = [
    "--slurm-status-command",
    "squeue",
    "--slurm-no-account",
    "--slurm-init-seconds-before-status-checks",
    "2",
]
SNAKEMAKE_TIMEOUT = 280  # s; the whole SLURM run, TIMEOUT + retry included
SITE_BEGIN = "EDIT FOR YOUR SITE"
SITE_END = re.compile(r"^# =+$")


# ---------------------------------------------------------------------------- helpers
def site_edit(profile: str, cpu: str = "cpu", gpu: str = "gpu", gpu_model: str = "fake") -> str:
    """What a user of the test cluster writes into the site block (and nowhere else):
    the partition names, no account (this cluster has no accounting) and the GPU model."""
    lines = []
    for line in profile.splitlines(keepends=True):
        if re.match(r"\s*slurm_account:", line):
            continue
        line = line.replace("edit-me-cpu-partition", cpu).replace("edit-me-gpu-partition", gpu)
        line = re.sub(r'^(\s*)# gpu_model: "[^"]*"', rf'\1gpu_model: "{gpu_model}"', line)
        lines.append(line)
    return "".join(lines)


def site_block(profile: str) -> range:
    """Line numbers (0-based) of the `EDIT FOR YOUR SITE` block, markers included."""
    lines = profile.splitlines()
    begin = next(i for i, line in enumerate(lines) if SITE_BEGIN in line)
    end = next(i for i in range(begin + 1, len(lines)) if SITE_END.match(lines[i]))
    return range(begin, end + 1)


def changed_lines(before: str, after: str) -> set[int]:
    """0-based line numbers of `before` that the edit replaced or deleted (or inserted at)."""
    changed: set[int] = set()
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    for tag, i1, i2, _, _ in matcher.get_opcodes():
        if tag != "equal":
            changed.update(range(i1, max(i2, i1 + 1)))
    return changed


def checkout(dst: Path) -> Path:
    """The files a user's clone has that the workflow reads (the package is installed)."""
    dst.mkdir(parents=True)
    shutil.copy(ROOT / "Snakefile", dst / "Snakefile")
    for folder in ("workflow", "config", "profiles", "envs", "paper"):  # the study's tables
        if (ROOT / folder).exists():
            shutil.copytree(ROOT / folder, dst / folder, symlinks=True)
    (dst / "slurm").symlink_to(os.readlink(ROOT / "slurm"))
    shutil.copy(DATA / "slurm_demo.yaml", dst / "slurm_demo.yaml")
    return dst


# What `mopeft plan` would ask for each train job (the values are the test's, to recognise them in
# the sbatch calls): the DAG must pass a plan's resources to SLURM unchanged.
PLANNED = {"mem_mb": 2100, "runtime_min": 9, "cpus": 3, "workers": 0, "gpu_mem_mb": 1000,
           "gpu_need_bytes": 10**9, "cache_host_mb": 100}  # fmt: skip


def write_plan(root: Path) -> None:
    """results/demo/plan.json for the run's config, one record per train job (as `mopeft plan`)."""
    from mopeft.io import write_json
    from mopeft.plan.jobs import config_digest, load_config, plan_path, run_jobs

    config = load_config([root / "config/demo.yaml", root / "slurm_demo.yaml"])
    jobs = {j.key: PLANNED for j in run_jobs(config) if j.rule == "train"}
    doc = {"config_digest": config_digest(config), "gpu": {"label": "test plan"}, "jobs": jobs}
    write_json(root / plan_path(config), doc)


def start_snakemake(cwd: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Snakemake in the background, its output (stdout: Snakemake 9 logs there) to cwd/run.log."""
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    env.pop("SNAKEMAKE_PROFILE", None)
    log = open(cwd / "run.log", "w")  # noqa: SIM115 - closed in finish()
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, cwd: Path, deadline: float) -> tuple[int, str]:
    """Wait until `deadline` (monotonic); then SIGINT, which Snakemake honours (it ignores
    SIGTERM) and which makes the SLURM executor scancel its jobs; SIGKILL as the last resort."""
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        rc = -999
    out = (cwd / "run.log").read_text(errors="replace")
    if rc == -999:
        out += f"\n*** killed: still running after the test's time limit ({SNAKEMAKE_TIMEOUT} s)"
    return rc, out


def slurm_jobs(cluster: SlurmCluster) -> list[dict[str, str]]:
    """Every job the controller remembers (MinJobAge=3600), as `scontrol -d show job` fields."""
    out = cluster.run("scontrol", "-d", "-o", "show", "job")
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\S+?)=(\S*)", line))
        if fields:
            jobs.append(fields)
    return jobs


def rule_of(job: dict[str, str]) -> str:
    """The plugin names the rule in --comment: rule_<name>[_wildcards_<...>]."""
    match = re.match(r"rule_(.+?)(?:_wildcards_|$)", job.get("Comment", ""))
    return match.group(1) if match else ""


def cells() -> list[str]:
    return [f"results/demo/cells/{d}/{m}/default/seed0/metrics.json" for d in DATASETS for m in METHODS]


# ---------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    c = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
    except ClusterUnavailable as exc:
        pytest.skip(str(exc))
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def runs(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The SLURM run and the local reference run, side by side (they overlap in time)."""
    base = tmp_path_factory.mktemp("runs")
    on_slurm = checkout(base / "slurm")
    profile = on_slurm / PROFILE
    profile.write_text(site_edit(profile.read_text()))
    shutil.copy(DATA / "slurm_timeout.smk", on_slurm / "slurm_timeout.smk")
    write_plan(on_slurm)  # the local run has none: the rules' defaults, the same results
    local = checkout(base / "local")

    t0 = time.monotonic()
    slurm_proc = start_snakemake(
        on_slurm,
        [
            TABLE,
            PROBE,
            "--snakefile",
            "slurm_timeout.smk",
            "--cores",  # the README's command: `snakemake --cores all --profile slurm`
            "all",
            "--profile",
            "slurm",
            *CONFIG,
            *TEST_ONLY,
            "--verbose",
        ],
        cluster.env,
    )
    # SLURM_CONF is not needed (nor wanted) by the local run.
    local_env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    local_proc = start_snakemake(
        local, [TABLE, "--workflow-profile", "none", "--cores", "2", *CONFIG], local_env
    )
    local_rc, local_out = finish(local_proc, local, t0 + SNAKEMAKE_TIMEOUT)
    slurm_rc, slurm_out = finish(slurm_proc, on_slurm, t0 + SNAKEMAKE_TIMEOUT)
    return {
        "slurm": on_slurm,
        "local": local,
        "slurm_rc": slurm_rc,
        "slurm_out": slurm_out,
        "local_rc": local_rc,
        "local_out": local_out,
        "seconds": time.monotonic() - t0,
        "jobs": slurm_jobs(cluster),
    }


@pytest.fixture(scope="module")
def slurm_run(runs: dict[str, object]) -> dict[str, object]:
    """The runs, once both have succeeded (every test below needs that)."""
    assert runs["local_rc"] == 0, str(runs["local_out"])[-5000:]
    assert runs["slurm_rc"] == 0, str(runs["slurm_out"])[-8000:]
    print(f"SLURM + local runs: {runs['seconds']:.0f} s")
    return runs


# ---------------------------------------------------------------------------- tests
def test_users_edit_only_the_site_block_of_the_profile() -> None:
    """The edit this test makes (= a user's) stays inside the marked block of the one file."""
    original = (ROOT / PROFILE).read_text()
    edited = site_edit(original)
    assert edited != original
    outside = changed_lines(original, edited) - set(site_block(original))
    assert not outside, [original.splitlines()[i] for i in sorted(outside)]
    assert "edit-me" not in edited, "a site placeholder outside what the README tells users to edit"
    assert (ROOT / "slurm").resolve() == (ROOT / "profiles/slurm").resolve()


def test_dag_completes_within_budget(slurm_run: dict[str, object]) -> None:
    assert float(slurm_run["seconds"]) < SNAKEMAKE_TIMEOUT
    jobs = slurm_run["jobs"]
    rules = sorted(rule_of(j) for j in jobs)  # type: ignore[union-attr]
    expected = {"raw": 2, "prepare": 2, "train": 4, "evaluate": 4, "combine": 4, "table": 1}
    for rule, n in expected.items():
        done = [j for j in jobs if rule_of(j) == rule and j["JobState"] == "COMPLETED"]  # type: ignore[union-attr]
        assert len(done) == n, (rule, rules)


def test_gpu_rules_ask_slurm_for_a_gpu_and_get_one(slurm_run: dict[str, object]) -> None:
    """train/evaluate: partition `gpu`, one GPU requested and allocated (slurmd exports its index
    as CUDA_VISIBLE_DEVICES), train with the CPUs, memory and time of the run's resource plan;
    CPU rules: partition `cpu`, no GPU."""
    jobs: list[dict[str, str]] = slurm_run["jobs"]  # type: ignore[assignment]
    out = str(slurm_run["slurm_out"])
    for job in jobs:
        rule = rule_of(job)
        if rule in ("train", "evaluate"):
            assert job["Partition"] == "gpu", job
            # train: the site block's gpu_model ("fake") -> --gpus=fake:1; evaluate: --gpus=1
            want = "gpu:fake:1" if rule == "train" else "gpu:1"
            assert job.get("TresPerJob") == f"gres:{want}", job
            assert re.fullmatch(r"gpu(:fake)?:1", job.get("JOB_GRES", "")), job  # allocated
        elif rule:
            assert job["Partition"] == "cpu", job
            assert "gpu" not in job.get("JOB_GRES", ""), job
    train_calls = [c for c in re.findall(r"sbatch call: (.*)", out) if "rule_train" in c]
    assert len(train_calls) == 4, out[-3000:]
    for call in train_calls:
        assert "--gpus=fake:1" in call and "-p gpu" in call, call
        # CPUs, memory and time are the resource plan's (not the login node's core count)
        assert "--cpus-per-task=3" in call and "--mem 2100" in call and "-t 9" in call, call
    # Once the train rule records what the job saw (README: "A GPU job sees ..."), every train
    # log must hold the GPU index SLURM gave it, never "unset".
    if "CUDA_VISIBLE_DEVICES" in (ROOT / "workflow/rules/train.smk").read_text():
        base = Path(slurm_run["slurm"])  # type: ignore[arg-type]
        logs = sorted(base.glob("logs/demo/train/**/*.log"))
        assert len(logs) == len(DATASETS) * len(METHODS), logs
        for log in logs:
            seen = re.findall(r"CUDA_VISIBLE_DEVICES=(\S+)", log.read_text())
            assert len(seen) == 1 and re.fullmatch(r"\d+", seen[0]), (log, seen)


def test_a_gpu_job_sees_cuda_visible_devices(cluster: SlurmCluster, tmp_path: Path) -> None:
    """The mechanism the training jobs rely on: slurmd exports the allocated GPU's index."""
    out = tmp_path / "job.out"
    job = cluster.run(
        "sbatch",
        "--parsable",
        "-p",
        "gpu",
        "--gpus=fake:1",
        "-o",
        str(out),
        "--wrap",
        "echo CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}",
    ).strip()
    deadline = time.monotonic() + 60
    while cluster.run("squeue", "-h", "-t", "all", "-j", job, "-o", "%T", check=False).strip() not in (
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
    ):
        assert time.monotonic() < deadline, cluster.run("scontrol", "show", "job", job)
        time.sleep(0.5)
    assert re.fullmatch(r"CUDA_VISIBLE_DEVICES=\d\n", out.read_text()), out.read_text()


def test_outputs_equal_a_local_run(slurm_run: dict[str, object]) -> None:
    """CPU training is deterministic: the cells' mIoU and the table are the local run's."""
    on_slurm, local = Path(slurm_run["slurm"]), Path(slurm_run["local"])  # type: ignore[arg-type]
    for cell in cells():
        a = json.loads((on_slurm / cell).read_text())
        b = json.loads((local / cell).read_text())
        assert a["miou"] == pytest.approx(b["miou"], abs=1e-9), cell
    with open(on_slurm / TABLE) as fa, open(local / TABLE) as fb:
        assert list(csv.reader(fa)) == list(csv.reader(fb))


def test_every_rule_wrote_its_log(slurm_run: dict[str, object]) -> None:
    base = Path(slurm_run["slurm"])  # type: ignore[arg-type]
    logs = {
        "raw": [f"logs/demo/raw/{d}.log" for d in DATASETS],
        "prepare": [f"logs/demo/prepare/{d}.log" for d in DATASETS],
        "train": [f"logs/demo/train/{d}/{m}/default/seed0/main.log" for d in DATASETS for m in METHODS],
        "evaluate": [f"logs/demo/evaluate/{d}/{m}/default/seed0/main.log" for d in DATASETS for m in METHODS],
        "combine": [f"logs/demo/combine/{d}/{m}/default/seed0.log" for d in DATASETS for m in METHODS],
        "table": ["logs/demo/tables/table_4_4.log"],
    }
    for rule, paths in logs.items():
        for path in paths:
            assert (base / path).is_file(), (rule, path)
            if rule in ("train", "evaluate"):  # the CLI logs what it trained / evaluated
                assert (base / path).stat().st_size > 0, (rule, path)
    # The failed attempt's SLURM log is kept for the user (successful ones are deleted).
    kept = list(base.glob("logs/slurm/rule_slurm_timeout_probe/*.log"))
    assert len(kept) == 1, kept


def test_timeout_is_retried_with_more_time(slurm_run: dict[str, object]) -> None:
    """Attempt 1 (-t 1) ends in TIMEOUT; the retry is submitted with -t 2 and completes."""
    out = str(slurm_run["slurm_out"])
    assert re.search(r"SLURM status is: 'TIMEOUT'", out), out[-4000:]
    assert "Trying to restart job" in out, out[-4000:]
    calls = [c for c in re.findall(r"sbatch call: (.*)", out) if "rule_slurm_timeout_probe" in c]
    limits = [re.search(r" -t (\S+)", c).group(1) for c in calls]  # type: ignore[union-attr]
    assert limits == ["1", "2"], calls
    probe = [j for j in slurm_run["jobs"] if rule_of(j) == "slurm_timeout_probe"]  # type: ignore[union-attr]
    assert sorted(j["JobState"] for j in probe) == ["COMPLETED", "TIMEOUT"], probe
    assert {j["JobState"]: j["TimeLimit"] for j in probe} == {
        "TIMEOUT": "00:01:00",
        "COMPLETED": "00:02:00",
    }
    # The rule's log is the successful attempt's (Snakemake clears logs before a job runs);
    # attempt 1 left its SLURM log, which shows the job that was killed.
    base = Path(slurm_run["slurm"])  # type: ignore[arg-type]
    log = (base / "logs/slurm_timeout_probe.log").read_text()
    assert re.findall(r"attempt runtime=(\d+) min", log) == ["2"], log
    (kept,) = base.glob("logs/slurm/rule_slurm_timeout_probe/*.log")
    assert 'echo "attempt runtime=1 min' in kept.read_text(), kept.read_text()[-3000:]
