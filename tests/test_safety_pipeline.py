"""The pipeline on a shared cluster (issue 11), in scratch copies: a data path with a space and
shell syntax runs and injects nothing; `.venv/bin/snakemake` works from a fresh shell with no
venv on PATH; its files are readable by other users; a failed rerun leaves no stale outputs."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from workflow_helpers import run_snakemake, workflow_copy

pytestmark = pytest.mark.slow

CELL = "results/demo/cells/deepcrack/baseline/default/seed0"


def _odd_data(wf: Path, odd: str) -> Path:
    demo = yaml.safe_load((wf / "config/demo.yaml").read_text())
    data = {**demo["data"], "raw_dir": f"{odd}/raw", "prepared_dir": f"{odd}/prepared"}
    (wf / "odd.yaml").write_text(yaml.safe_dump({"data": data}))
    return wf / "odd.yaml"


def _unreadable(root: Path) -> list[str]:
    """Files not readable, folders not listable, by group and others (what a colleague needs)."""
    bad = []
    for path in [root, *root.rglob("*")]:
        if path.is_symlink() or ".snakemake" in path.parts:
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        need = 0o055 if path.is_dir() else 0o044
        if mode & need != need:
            bad.append(f"{path.relative_to(root)}: {oct(mode)}")
    return bad


# Unquoted, `--out data;touch INJECTED;x/raw/deepcrack` writes the miniature into `data`, then runs
# `touch INJECTED` in the workdir; with the space, `mopeft` itself gets a stray argument.
@pytest.mark.parametrize("odd", ["data;touch INJECTED;x", "data dir;touch INJECTED;x"])
def test_a_data_path_with_a_space_and_shell_syntax_runs_and_injects_nothing(tmp_path, odd):
    wf = workflow_copy(tmp_path, package=True)
    overlay = _odd_data(wf, odd)
    targets = [f"{odd}/prepared/{d}/meta.json" for d in ("kvasir_instrument", "deepcrack")]
    args = ("--cores", "2", "--configfile", "config/demo.yaml", str(overlay), "--", *targets)
    old = os.umask(0o022)
    try:
        res = run_snakemake(wf, *args)
    finally:
        os.umask(old)
    injected = [str(p) for p in wf.rglob("INJECTED") if p.is_file()]
    assert not injected, injected
    assert res.returncode == 0, res.out[-4000:]
    for target in targets:
        assert (wf / target).is_file(), target
    assert (wf / odd / "raw" / "deepcrack" / "MINIATURE").is_file()
    assert not (wf / "data").exists() and not (wf / "x").exists()
    assert not _unreadable(wf / odd), _unreadable(wf / odd)[:10]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A scratch copy and the environment of a fresh shell: the venv neither on PATH nor active."""
    wf = workflow_copy(tmp_path_factory.mktemp("fresh"), package=True)
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p and p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PATH")}
    env |= {"PATH": path, "PYTHONPATH": str(wf)}  # PYTHONPATH: the copy's package, as run_snakemake
    probe = subprocess.run(["sh", "-c", "command -v mopeft || echo none"], env=env, capture_output=True)
    assert probe.stdout.strip() == b"none", f"mopeft is on PATH without the venv: {probe.stdout}"
    return wf, env


def _snakemake(wf: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """`.venv/bin/snakemake` by its path, as the README writes it (no profile)."""
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", *args]
    res = subprocess.run(cmd, cwd=wf, env=env, capture_output=True, text=True, timeout=900)
    res.out = res.stdout + res.stderr
    return res


@pytest.fixture(scope="module")
def cell(fresh):
    wf, env = fresh
    old = os.umask(0o022)
    try:
        res = _snakemake(
            wf, env, "--cores", "2", "--configfile", "config/demo.yaml", "-R", "train", "--",
            f"{CELL}/metrics.json",
        )  # fmt: skip
    finally:
        os.umask(old)
    assert res.returncode == 0, res.out[-4000:]
    return wf, env


def test_the_readme_command_works_from_a_fresh_shell(cell):
    wf, _ = cell
    assert (wf / CELL / "metrics.json").is_file()
    log = wf / "logs/demo/train/deepcrack/baseline/default/seed0/main.log"
    assert "command not found" not in log.read_text()


def test_a_pipeline_runs_files_are_readable_by_other_users(cell):
    wf, _ = cell
    for folder in ("data", "results/demo", "weights", "logs"):
        assert (wf / folder).is_dir(), folder
        assert not _unreadable(wf / folder), _unreadable(wf / folder)[:10]


def test_deleting_a_cells_model_reruns_nothing_and_forcerun_rebuilds_it(cell):
    """What README 'Working with the pipeline' says about deleting and forcing a cell."""
    wf, env = cell
    model = wf / CELL / "units/main/model.safetensors"
    saved = model.read_bytes()
    model.unlink()
    try:
        plan = _snakemake(wf, env, "-n", "--configfile", "config/demo.yaml", "--", f"{CELL}/metrics.json")
        assert plan.returncode == 0 and "Nothing to be done" in plan.out, plan.out[-3000:]
        plan = _snakemake(
            wf, env, "-n", "--configfile", "config/demo.yaml",
            "--forcerun", f"{CELL}/units/main/model.safetensors", "--", f"{CELL}/metrics.json",
        )  # fmt: skip
        assert plan.returncode == 0, plan.out[-3000:]
        rules = re.findall(r"^(?:local)?rule (\w+):$", plan.out, flags=re.M)
        assert sorted(rules) == ["combine", "evaluate", "train"], plan.out[-3000:]
    finally:
        model.write_bytes(saved)


def _bad_label(folder: Path) -> tuple[Path, bytes]:
    """Overwrite the first label of ``folder`` with one holding the value 200; return it and its bytes."""
    path = sorted(folder.glob("*.png"))[0]
    saved = path.read_bytes()
    label = np.zeros(Image.open(path).size[::-1], dtype=np.uint8)
    label[:4, :4] = 200
    Image.fromarray(label, mode="L").save(path)
    return path, saved


@pytest.mark.parametrize(
    ("rule", "split", "outputs"),
    [  # evaluate first: a failed train removes the model that evaluate would need
        (
            "evaluate",
            "test",
            [f"units/main/eval/{f}" for f in ("metrics.json", "confusion.npy", "gates.npz", "per_image.npz")],
        ),
        ("train", "train", ["units/main/model.safetensors", "units/main/train_log.json"]),
    ],
)
def test_a_failed_rerun_leaves_none_of_its_outputs_and_names_the_bad_file(cell, rule, split, outputs):
    wf, env = cell
    for out in outputs:
        assert (wf / CELL / out).is_file(), out  # the previous, successful run's
    label, saved = _bad_label(wf / "data/demo/prepared/deepcrack" / split / "labels")
    try:
        args = ("--cores", "1", "--configfile", "config/demo.yaml", "-R", rule, "--", f"{CELL}/metrics.json")
        res = _snakemake(wf, env, *args)
    finally:
        label.write_bytes(saved)
    assert res.returncode != 0, res.out[-3000:]
    left = [out for out in outputs if (wf / CELL / out).exists()]
    assert not left, left
    log = (wf / f"logs/demo/{rule}/deepcrack/baseline/default/seed0/main.log").read_text()
    error = [line for line in log.splitlines() if line.startswith(f"mopeft {rule}: error:")]
    named = str(Path("data/demo/prepared/deepcrack") / split / "labels" / label.name)
    assert error and named in error[0], log[-2000:]
    assert "[200]" in error[0] and "Traceback" not in log
