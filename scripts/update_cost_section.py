#!/usr/bin/env python3
"""Rewrite README.md's cost section from `mopeft plan --summary` files (what `make plan` runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mopeft.io import write_text  # noqa: E402
from mopeft.plan.report import cost_section, replace_cost_section  # noqa: E402


def main(paths: list[str]) -> int:
    summaries = [json.loads(Path(p).read_text()) for p in paths]
    readme = ROOT / "README.md"
    write_text(readme, replace_cost_section(readme.read_text(), cost_section(summaries)))
    print(f"updated {readme.name}'s cost section from {', '.join(paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or sorted(str(p) for p in (ROOT / "docs/plan").glob("*.summary.json"))))
