"""The conda env of the rules installs the lock that `make` installs (one truth: the lock, from pyproject)."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_conda_env_installs_the_makefile_lock_then_the_checkout():
    env = yaml.safe_load((ROOT / "envs/mopeft.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    lock = re.search(r"^LOCK\s*:?=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.MULTILINE)[1]
    # conda runs pip from the yaml's folder: both paths are relative to envs/
    assert pip == [f"-r ../{lock}", "-e ../"]
    assert (ROOT / "envs" / f"../{lock}").is_file()
    assert "python=3.11" in env["dependencies"]  # the lock is for CPython 3.11
