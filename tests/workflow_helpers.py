"""Run the Snakemake workflow in a scratch copy of the checkout (tests must not touch results/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workflow_copy(dst: Path, package: bool = False, profile: bool = False) -> Path:
    """The files Snakemake needs: the Snakefile, rules, schema, configs, the conda env file (rules
    record it in their metadata) and the study's CSVs (table inputs). ``package=True`` copies the
    ``mopeft`` package too; :func:`run_snakemake` then runs the copy's code (PYTHONPATH), so a test
    can add or touch modules without touching the checkout. ``profile=True`` copies the SLURM
    profile and its ``slurm`` link, so the README's ``--profile slurm`` commands resolve there."""
    shutil.copy(ROOT / "Snakefile", dst / "Snakefile")
    for folder in ("workflow", "config", "envs", "paper"):
        shutil.copytree(ROOT / folder, dst / folder)
    if package:
        shutil.copytree(ROOT / "mopeft", dst / "mopeft", ignore=shutil.ignore_patterns("__pycache__"))
    if profile:
        shutil.copytree(ROOT / "profiles", dst / "profiles")
        (dst / "slurm").symlink_to(Path("profiles") / "slurm", target_is_directory=True)
    return dst


def run_snakemake(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`snakemake` of this interpreter's environment, isolated from any profile; ``.out`` holds
    stdout + stderr (Snakemake 9 logs to stdout)."""
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    if (cwd / "mopeft").is_dir():  # a copy with its own package: run that code, jobs included
        env["PYTHONPATH"] = str(cwd)
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    res.out = res.stdout + res.stderr
    return res
