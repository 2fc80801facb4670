"""The documentation's contract stays true: the CLI list is the CLI's, no notes outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

from mopeft.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_lists_exactly_the_cli_commands():
    text = (ROOT / "docs/architecture.md").read_text()
    block = text.split("<!-- cli-list -->")[1]
    documented = re.findall(r"^\| `mopeft ([\w-]+)", block, flags=re.M)
    assert sorted(documented) == sorted(COMMANDS)
    assert len(documented) == len(set(documented))


def test_no_file_cites_notes_outside_the_repository():
    """Facts the code, tests and docs rely on live in docs/; no machine paths either."""
    notes = "|".join(("methods", "performance", "snakemake"))
    pattern = re.compile(rf"(?<![\w/])({notes})\.md|shared/{'reference'}|/{'work'}/")
    offenders = []
    for folder in ("mopeft", "tests", "workflow", "config", "scripts", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".smk", ".yaml", ".md", ".sh", ".rst"}:
                for n, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
                    if pattern.search(line) and "docs/" not in line:
                        offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    for name in ("README.md", "DEVELOPERS.md", "Snakefile", "Makefile"):
        for n, line in enumerate((ROOT / name).read_text().splitlines(), 1):
            if pattern.search(line) and "docs/" not in line:
                offenders.append(f"{name}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_every_cited_doc_exists():
    cited = set()
    for folder in ("mopeft", "tests", "workflow", "config", "scripts", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".py", ".smk", ".yaml", ".md", ".sh", ".rst"}:
                cited |= set(re.findall(r"docs/([\w-]+\.md)", path.read_text(errors="ignore")))
    for name in ("README.md", "DEVELOPERS.md"):
        cited |= set(re.findall(r"docs/([\w-]+\.md)", (ROOT / name).read_text()))
    missing = sorted(c for c in cited if not (ROOT / "docs" / c).is_file())
    assert not missing, missing


def test_readme_cost_section_is_the_committed_plan():
    """README's cost figures are generated (`make plan`), never typed: the section between its
    markers is exactly what docs/plan/*.summary.json render to."""
    import json

    from mopeft.plan.report import COST_BEGIN, COST_END, cost_section

    summaries = [json.loads(p.read_text()) for p in sorted((ROOT / "docs/plan").glob("*.summary.json"))]
    assert {s["gpu"]["key"] for s in summaries} >= {"h100", "a100-40"}
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(COST_BEGIN) : readme.index(COST_END) + len(COST_END)]
    assert section == cost_section(summaries)
    for s in summaries:  # the plan covers the study's DAG, and every job fits these GPUs
        assert s["totals"]["jobs"] == 640 and not s["totals"]["not_fitting"], s["gpu"]["key"]
