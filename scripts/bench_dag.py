"""How long Snakemake takes to plan the whole study (``snakemake -n``): wall and CPU seconds.

Why: the DAG of the study has ~1,000 jobs; planning it should stay a matter of seconds, but a
timed assertion in the test suite fails at random on a shared machine, so the figure lives here.
The dry run runs in a scratch copy of the checkout (results/ is not touched). No asserts: the
figures are printed.

    .venv/bin/python scripts/bench_dag.py [--reps 3] [--configfile config/config.yaml]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _copy(dst: Path) -> None:
    shutil.copy(ROOT / "Snakefile", dst / "Snakefile")
    for folder in ("workflow", "config", "envs", "paper"):
        shutil.copytree(ROOT / folder, dst / folder)


def dry_run(cwd: Path, configfile: str) -> tuple[float, float, int]:
    """(wall s, CPU s of the child, jobs planned) of one ``snakemake -n``."""
    cmd = [sys.executable, "-m", "snakemake", "--workflow-profile", "none", "-n", "--forceall",
           "--configfile", configfile]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode:
        sys.exit(res.stdout[-2000:] + res.stderr[-2000:])
    jobs = sum(1 for line in res.stdout.splitlines() if line.startswith(("rule ", "localrule ")))
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--configfile", default="config/config.yaml")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _copy(Path(tmp))
        runs = [dry_run(Path(tmp), args.configfile) for _ in range(args.reps)]
    walls, cpus, jobs = zip(*runs, strict=True)
    print(f"{args.configfile}: {jobs[0]} jobs planned; median of {args.reps}: "
          f"{statistics.median(walls):.1f} s wall, {statistics.median(cpus):.1f} s CPU "
          f"(min {min(cpus):.1f}, max {max(cpus):.1f})")


if __name__ == "__main__":
    main()
