"""The conda env of the rules installs the lock that `make` installs (one truth: the lock, from pyproject)."""

import hashlib
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = ROOT / "envs/mopeft.yaml"
DEPLOY = ROOT / "envs/mopeft.post-deploy.sh"


def _makefile_lock() -> str:
    return re.search(r"^LOCK\s*:?=\s*(\S+)\s*$", (ROOT / "Makefile").read_text(), re.MULTILINE)[1]


def test_conda_env_has_no_relative_pip_paths_and_its_post_deploy_installs_the_lock_then_the_checkout():
    env = yaml.safe_load(ENV.read_text())
    # Snakemake copies the yaml into .snakemake/conda/, where relative pip paths would break.
    assert not any(isinstance(d, dict) for d in env["dependencies"]), env["dependencies"]
    assert "python=3.11" in env["dependencies"]  # the lock is for CPython 3.11
    lock = _makefile_lock()
    commands = [line for line in DEPLOY.read_text().splitlines() if line.startswith("python -m pip")]
    # Run from the checkout (the workflow's working directory): the lock, then mopeft without deps.
    assert commands == [f"python -m pip install -r {lock}", "python -m pip install --no-deps -e ."]
    assert (ROOT / lock).is_file()
    assert DEPLOY.stat().st_mode & 0o111  # executable, with a shebang Snakemake reads
    assert DEPLOY.read_text().startswith("#!")


def test_conda_env_file_carries_the_lock_digest_so_a_new_lock_is_a_new_environment():
    digest = hashlib.sha256((ROOT / _makefile_lock()).read_bytes()).hexdigest()
    assert re.findall(r"^# lock sha256: ([0-9a-f]{64})$", ENV.read_text(), re.MULTILINE) == [digest]
