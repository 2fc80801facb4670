"""The pipeline on a shared cluster (issue 11), in scratch copies: a data path with a space and
shell syntax runs and injects nothing, and its files are readable by other users."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from workflow_helpers import run_snakemake, workflow_copy

pytestmark = pytest.mark.slow

# Unquoted, `--out data dir;touch INJECTED;x/raw/...` would run `touch INJECTED` in the workdir.
ODD = "data dir;touch INJECTED;x"


def _odd_data(wf: Path) -> Path:
    demo = yaml.safe_load((wf / "config/demo.yaml").read_text())
    data = {**demo["data"], "raw_dir": f"{ODD}/raw", "prepared_dir": f"{ODD}/prepared"}
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


def test_a_data_path_with_a_space_and_shell_syntax_runs_and_injects_nothing(tmp_path):
    wf = workflow_copy(tmp_path, package=True)
    odd = _odd_data(wf)
    targets = [f"{ODD}/prepared/{d}/meta.json" for d in ("kvasir_instrument", "deepcrack")]
    old = os.umask(0o022)
    try:
        res = run_snakemake(wf, "--cores", "2", "--configfile", "config/demo.yaml", str(odd), "--", *targets)
    finally:
        os.umask(old)
    assert res.returncode == 0, res.out[-4000:]
    for target in targets:
        assert (wf / target).is_file(), target
    assert (wf / ODD / "raw" / "deepcrack" / "MINIATURE").is_file()
    injected = [p for p in wf.rglob("INJECTED") if p.is_file()]
    assert not injected and not (wf / "x").exists(), injected
    assert not _unreadable(wf / ODD), _unreadable(wf / ODD)[:10]
