"""The demo end to end (slow; run in CI): every table and the figure appear, the report builds,
a deleted cell result is recomputed by that cell's own job only, and a code or config change
re-plans exactly the jobs it can affect."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from workflow_helpers import run_snakemake, workflow_copy

TABLES = ("4_1", "4_2", "4_3", "4_4", "4_5", "4_6", "4_7", "4_8", "a1")


def _snakemake(cwd: Path, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    return run_snakemake(cwd, *args, timeout=timeout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    wf = workflow_copy(tmp_path_factory.mktemp("demo"), package=True)
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
    for name in ("examples", "training_curves"):  # Fig. 4.1 and the training curves
        for ext in ("png", "pdf", "csv"):
            assert (demo / f"results/demo/figures/{name}.{ext}").stat().st_size > 0, (name, ext)
    assert (demo / "results/demo/config.yaml").is_file()


@pytest.mark.slow
def test_the_generated_folder_dataset_is_in_the_main_tables_under_custom(demo):
    """The own-data path end to end: `mopeft scenes` folders -> prepare --spec -> every main cell ->
    a "Custom" row and domain mean in Tables 4.3/4.4, and its images in Fig. 4.1."""
    import pandas as pd

    from mopeft.report.registry import TABLES

    meta = yaml.safe_load((demo / "data/demo/prepared/shapes/meta.json").read_text())
    assert meta["domain"] == "Custom" and meta["synthetic"] and len(meta["sources"]) == 2 * 24
    for name in ("4_3", "4_4"):
        df = pd.read_csv(demo / f"results/demo/tables/table_{name}.csv")
        row = df[df["dataset"] == "shapes"].iloc[0]
        assert row["domain"] == "Custom" and row["name"] == "Shapes (generated)"
        methods = TABLES[name.replace("_", ".")].methods
        assert all(0 < row[m] <= 100 for m in methods), row
        assert (df["name"] == "Mean Custom (datasets present)").sum() == 1
    shown = pd.read_csv(demo / "results/demo/figures/examples.csv")
    assert (shown["dataset"] == "shapes").any()


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


def _jobs(out: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry-run plans. A job's block runs from its ``rule NAME:``
    line to the next one (Snakemake 9 does not always leave a blank line between jobs)."""
    jobs = []
    for block in re.split(r"^(?=(?:local)?rule \w+:$)", out, flags=re.M):
        rule = re.match(r"(?:local)?rule (\w+):$", block, flags=re.M)
        if rule:
            wildcards = re.search(r"^\s+wildcards: (.+)$", block, flags=re.M)
            jobs.append((rule.group(1), wildcards.group(1) if wildcards else ""))
    return jobs


@contextlib.contextmanager
def _touched(path: Path) -> Iterator[None]:
    """A source file edited for the block (new content and a newer time: Snakemake also compares
    checksums, so a bare mtime change is not an edit); its bytes and times restored after."""
    st, before = path.stat(), path.read_bytes()
    path.write_bytes(before + b"\n_EDITED = 1\n")
    os.utime(path, (st.st_atime, time.time() + 3600))  # newer than any output (the copy keeps old mtimes)
    try:
        yield
    finally:
        path.write_bytes(before)
        os.utime(path, (st.st_atime, st.st_mtime))


@pytest.mark.slow
def test_editing_a_module_fair1m_imports_replans_only_fair1ms_data_jobs(demo):
    """detection/xml_io.py is imported by FAIR-1M's preparer and by its miniature writer (not
    listed by hand anywhere): FAIR-1M's raw and prepare jobs re-plan, no other dataset's."""
    with _touched(demo / "mopeft/detection/xml_io.py"):
        plan = _snakemake(demo, "-n", "--configfile", "config/demo.yaml")
    assert plan.returncode == 0, plan.out[-3000:]
    prepares = [w for rule, w in _jobs(plan.out) if rule == "prepare"]
    assert prepares == ["dataset=fair1m"], plan.out[-3000:]
    assert [w for r, w in _jobs(plan.out) if r == "raw"] == ["dataset=fair1m"], plan.out[-3000:]


@pytest.mark.slow
def test_editing_the_miniature_helpers_replans_every_raw_job(demo):
    with _touched(demo / "mopeft/data/synthetic/miniature.py"):
        plan = _snakemake(demo, "-n", "--configfile", "config/demo.yaml")
    assert plan.returncode == 0, plan.out[-3000:]
    raws = sorted(w for rule, w in _jobs(plan.out) if rule == "raw")
    demo_datasets = ["dark_zurich", "deepcrack", "fair1m", "floodnet", "kvasir_instrument"]
    assert raws == [f"dataset={d}" for d in demo_datasets], plan.out[-3000:]


@pytest.mark.slow
def test_changing_kfold_replans_only_the_kfold_datasets_jobs(demo):
    """Only Dark Zurich (no labelled train split) is scored by folds in the demo."""
    cfg = yaml.safe_load((demo / "config/demo.yaml").read_text())
    (demo / "kfold3.yaml").write_text(yaml.safe_dump({"data": {**cfg["data"], "kfold": 3}}))
    plan = _snakemake(demo, "-n", "--configfile", "config/demo.yaml", "kfold3.yaml")
    assert plan.returncode == 0, plan.out[-3000:]
    jobs = _jobs(plan.out)
    per_cell = [(r, w) for r, w in jobs if r in ("raw", "prepare", "train", "evaluate", "combine")]
    assert per_cell and all("dataset=dark_zurich" in w for _, w in per_cell), per_cell
    assert {r for r, _ in per_cell} == {"train", "evaluate", "combine"}  # no re-preparation
    assert any("unit=fold2" in w for r, w in per_cell if r == "train")  # the new third fold
