#!/usr/bin/env python3
"""Rewrite docs/demo.md's numbers from a finished demo run (what `make demo-doc` runs).

Usage: scripts/update_demo_doc.py [RUN_DIR]   (default: results/demo, written by `make demo`)

Only the part between ``<!-- demo:tables -->`` and ``<!-- /demo:tables -->`` changes: the numbers,
and every "above / below the baseline" statement, are computed from the run's tables
(mopeft/report/demo_doc.py), so the page says what that run's tables say and nothing else.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mopeft.io import write_text  # noqa: E402
from mopeft.report.demo_doc import load_results, render, replace_block  # noqa: E402


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0]) if argv else ROOT / "results/demo"
    doc = ROOT / "docs/demo.md"
    try:
        results = load_results(run_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = run_dir.resolve()
    shown = source.relative_to(ROOT) if source.is_relative_to(ROOT) else Path(run_dir.name)
    write_text(doc, replace_block(doc.read_text(), render(results, shown.as_posix())))
    print(f"updated {doc.relative_to(ROOT)}'s demo numbers from {shown.as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
