"""The demo end to end (slow; run in CI): every table and the figure appear, the report builds,
and a deleted cell result is recomputed by that cell's own job only."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from workflow_helpers import run_snakemake, workflow_copy

TABLES = ("4_1", "4_2", "4_3", "4_4", "4_5", "4_6", "4_7", "4_8", "a1")


def _snakemake(cwd: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return run_snakemake(cwd, *args, timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    wf = workflow_copy(tmp_path_factory.mktemp("demo"))
    res = _snakemake(wf, "--cores", "2", "--configfile", "config/demo.yaml", "--show-failed-logs")
    assert res.returncode == 0, res.out[-6000:]
    return wf


@pytest.mark.slow
def test_demo_writes_every_table_and_the_figure(demo):
    for name in TABLES:
        for ext in ("csv", "md", "tex"):
            path = demo / f"results/demo/tables/table_{name}.{ext}"
            assert path.is_file() and path.stat().st_size > 0, path
    for ext in ("png", "pdf"):
        assert (demo / f"results/demo/figures/gate_frequency.{ext}").is_file()
    assert (demo / "results/demo/config.yaml").is_file()


@pytest.mark.slow
def test_demo_is_up_to_date_after_the_run(demo):
    res = _snakemake(demo, "-n", "--configfile", "config/demo.yaml")
    assert res.returncode == 0, res.out[-3000:]
    assert "Nothing to be done" in res.out, res.out[-3000:]


@pytest.mark.slow
def test_deleted_cell_reruns_only_its_combine(demo):
    cell = "results/demo/cells/kvasir_instrument/lora/default/seed0/metrics.json"
    before = (demo / cell).read_text()
    (demo / cell).unlink()
    plan = _snakemake(demo, cell, "-n", "--configfile", "config/demo.yaml")
    assert plan.returncode == 0, plan.out[-3000:]
    assert re.findall(r"^(?:local)?rule (\w+):$", plan.out, flags=re.M) == ["combine"], plan.out[-3000:]
    res = _snakemake(demo, cell, "--cores", "1", "--configfile", "config/demo.yaml")
    assert res.returncode == 0, res.out[-3000:]
    assert (demo / cell).read_text() == before  # deterministic given the same unit evaluations


@pytest.mark.slow
def test_demo_report_builds(demo):
    res = _snakemake(
        demo, "--cores", "1", "--configfile", "config/demo.yaml", "--report", "results/demo/report.html"
    )
    assert res.returncode == 0, res.out[-3000:]
    assert (demo / "results/demo/report.html").stat().st_size > 10_000
