"""Run the Snakemake workflow in a scratch copy of the checkout (tests must not touch results/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def workflow_copy(dst: Path) -> Path:
    """The files Snakemake needs: the Snakefile, rules, schema, configs and the conda env file
    (rules record it in their metadata)."""
    shutil.copy(ROOT / "Snakefile", dst / "Snakefile")
    for folder in ("workflow", "config", "envs"):
        shutil.copytree(ROOT / folder, dst / folder)
    return dst


def run_snakemake(cwd: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`snakemake` of this interpreter's environment, isolated from any profile; ``.out`` holds
    stdout + stderr (Snakemake 9 logs to stdout)."""
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", *args]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    res.out = res.stdout + res.stderr
    return res
