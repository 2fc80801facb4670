"""Every field of every rule's shell command is quoted (issue 11): a config path with a space or a
`;` reaches the command as one argument (tests/test_safety_pipeline.py runs such a path)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _shell_strings(smk: Path) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal in the `shell:` blocks of a rule file."""
    lines = smk.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() != "shell:":
            continue
        indent = len(line) - len(line.lstrip())
        for j in range(i + 1, len(lines)):
            body = lines[j]
            if body.strip() and len(body) - len(body.lstrip()) <= indent:
                break
            for literal in re.findall(r'"((?:[^"\\]|\\.)*)"', body):
                yield j + 1, literal


def test_every_field_of_every_shell_command_is_quoted():
    """A config path with a space or a `;` must reach the command as one argument, never as syntax."""
    seen, unquoted = 0, []
    for smk in sorted((ROOT / "workflow/rules").glob("*.smk")):
        for n, text in _shell_strings(smk):
            for field in re.findall(r"\{([^{}]+)\}", text.replace("{{", "").replace("}}", "")):
                seen += 1
                if field != "threads" and not field.endswith(":q"):
                    unquoted.append(f"{smk.name}:{n}: {{{field}}}")
    assert seen > 50, seen  # the parser found the rules' commands
    assert not unquoted, unquoted
