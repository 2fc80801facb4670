"""Code reruns through Snakemake (README "Working with the pipeline"): a job's code is a content hash
in its params (mopeft.codedeps), so after a run

* a version bump, a docstring or comment, a registry label plans nothing;
* an edit of LoRA's forward plans exactly the LoRA-using cells (LoRA, MoPEFT) and what is built from
  them, not the VPT cell;
* ``--rerun-triggers mtime`` ignores code; ``--touch`` accepts a change; ``-R`` forces.

"After a run" is cheap here: a small run (one dataset, LoRA, VPT and MoPEFT) in a scratch copy with
its own package, every output created empty and then recorded by ``snakemake --touch`` (which
writes the params Snakemake compares, exactly as a real run does). Nothing is trained.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from workflow_helpers import ROOT, run_snakemake, workflow_copy

SMALL = {  # over config/demo.yaml: one registered dataset, no detection, no ablation
    "datasets": ["kvasir_instrument"],
    "custom_datasets": {},
    "main": {"methods": ["lora", "vpt", "mopeft"]},
    "ablations": {"method": "mopeft", "studies": []},
    "efficiency": {"dataset": "kvasir_instrument", "image_size": 96, "methods": ["lora", "vpt"]},
    "detection": {"dataset": "fair1m", "methods": []},
    "figures": {"gate_frequency": {"datasets": ["kvasir_instrument"]}},
}
CONFIG = ("--configfile", "config/demo.yaml", "small.yaml")
LORA_FORWARD = "        a_q, a_v = a.split(self.r, dim=-1)\n"
# What an edit of LoRA's forward plans: the LoRA and MoPEFT cells, and everything built from them.
LORA_JOBS = {
    "train": {"lora", "mopeft"},
    "evaluate": {"lora", "mopeft"},
    "combine": {"lora", "mopeft"},
    "params": {"lora"},
    "flops": {"lora"},
    "bench": {""},
    "table": {"4_3", "4_4", "4_5"},
    "gate_frequency": {""},
    "examples_figure": {""},
    "training_curves": {""},
    "all": {""},
}


def _jobs(out: str) -> dict[str, set[str]]:
    """rule -> the method (or table) of each job a dry run plans ("" for a job without one)."""
    jobs: dict[str, set[str]] = {}
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", out, flags=re.M):
        rule = re.match(r"(?:local)?rule (\w+):$", block, flags=re.M)
        if rule:
            key = re.search(r"^\s+wildcards: .*?\b(?:method|name)=([\w.]+)", block, flags=re.M)
            jobs.setdefault(rule.group(1), set()).add(key.group(1) if key else "")
    return jobs


def _plan(wf: Path, *args: str) -> dict[str, set[str]]:
    res = run_snakemake(wf, "-n", *CONFIG, *args)
    assert res.returncode == 0, res.out[-3000:]
    return _jobs(res.out)


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Path:
    """The small run, "done": every job's params recorded (``--touch`` with no outputs yet: it
    records them and warns), then its outputs created in the order the jobs ran, each newer than
    the ones before (as a run leaves them)."""
    wf = workflow_copy(tmp_path_factory.mktemp("rerun"), package=True)
    (wf / "small.yaml").write_text(yaml.safe_dump(SMALL))
    touch = run_snakemake(wf, "--touch", "--forceall", "--cores", "1", *CONFIG)
    assert touch.returncode == 0, touch.out[-3000:]
    start = time.time() - 3600
    for i, line in enumerate(re.findall(r"^    output: (.+)$", touch.out, flags=re.M)):
        for name in (p.strip() for p in line.split(",")):
            path = wf / name
            if path.suffix:  # a file; the raw folder and evaluate's examples/ are directories
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            else:
                path.mkdir(parents=True, exist_ok=True)
            os.utime(path, (start + i, start + i))
    return wf


@contextlib.contextmanager
def _edited(wf: Path, *edits: tuple[str, str, str]) -> Iterator[None]:
    """(file, old, new) edits of the copy's package for the block, undone after it."""
    saved = {}
    for name, old, new in edits:
        path = wf / "mopeft" / name
        current = path.read_text()
        saved.setdefault(path, current)
        assert current.count(old) == 1, (name, old)
        path.write_text(current.replace(old, new))
    try:
        yield
    finally:
        for path, before in saved.items():
            path.write_text(before)


NO_OP = (
    ("__init__.py", '__version__ = "0.1.0"', '__version__ = "0.2.0"'),
    ("peft/lora.py", '"""Low-rank updates', '"""Low-rank (reworded) updates'),
    ("methods/registry.py", '            "LoRA",\n', '            "LoRA (r=8)",\n'),
)
LORA_EDIT = ("peft/lora.py", LORA_FORWARD, LORA_FORWARD + "        a_q = a_q + 0.0\n")


def test_a_version_bump_a_docstring_and_a_label_plan_nothing(done):
    with _edited(done, *NO_OP):
        assert _plan(done) == {}


def test_an_edit_of_loras_forward_plans_the_lora_using_cells_and_what_is_built_from_them(done):
    with _edited(done, LORA_EDIT):
        assert _plan(done) == LORA_JOBS  # not the VPT cell, nor the dataset tables 4.1/4.2
        # make-like: only file times count, and no code file is an input
        assert _plan(done, "--rerun-triggers", "mtime") == {}


def test_forcerun_rebuilds_what_a_label_change_left_alone(done):
    """README: a label reaches the tables when they are forced (`-R table`), and only they rerun."""
    with _edited(done, *NO_OP):
        assert _plan(done, "-R", "table") == {"table": {"4_1", "4_2", "4_3", "4_4", "4_5"}, "all": {""}}


def test_touch_accepts_a_code_change_without_rerunning(done):
    with _edited(done, LORA_EDIT):
        touched = run_snakemake(done, "--touch", "--cores", "1", *CONFIG)
        assert touched.returncode == 0, touched.out[-3000:]
        assert _plan(done) == {}
    # the recorded hashes are now the edited code's: accept the original back the same way
    assert run_snakemake(done, "--touch", "--cores", "1", *CONFIG).returncode == 0


def test_the_readme_documents_each_command():
    section = (
        (ROOT / "README.md").read_text().split("## Working with the pipeline", 1)[1].split("\n## ", 1)[0]
    )
    for flag in ("--forcerun", "-R table", "--touch", "--rerun-triggers mtime"):
        assert flag in section, flag
