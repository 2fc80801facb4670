"""Which source files of the package a command depends on: the static closure of its imports.

Snakemake does not see Python imports, so every rule declares the package files its command runs as
inputs, and a code change reruns exactly the jobs it can affect. Hand-kept lists go stale (a
preparer's helper module is forgotten, and the old labels stay), so the lists are computed: parse
each module (``ast``, no import, no torch), follow every ``import mopeft...`` /
``from mopeft... import ...`` / relative import anywhere in the file (function-level lazy imports
included), and collect the files. Dynamic imports by string (registries) are not followed: a rule
names the module it selects (the method's or the dataset's) as an extra root.

Standard library only: the DAG imports this at parse time.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "mopeft"
ROOT = Path(__file__).resolve().parent  # the package folder


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """``mopeft.a.b`` -> ``<root>/a/b.py`` or ``<root>/a/b/__init__.py`` (None if neither exists)."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return None
    base = root.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """Every ``mopeft`` module a file imports, at any depth of its code (``from x import y``: both
    ``x`` and ``x.y``, since ``y`` may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}


def _parents(module: str) -> list[str]:
    """Importing ``mopeft.a.b`` runs ``mopeft/__init__`` and ``mopeft/a/__init__`` first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache
def closure(roots: tuple[str, ...], root: Path = ROOT) -> tuple[Path, ...]:
    """Sorted files of the modules ``roots`` import, transitively, with their packages' ``__init__``."""
    seen: set[Path] = set()
    todo = list(roots)
    done: set[str] = set()
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        for name in [*_parents(module), module]:
            path = module_file(name, root)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_modules(path, root))
    missing = [m for m in roots if module_file(m, root) is None]
    if missing:
        raise ValueError(f"no source file for module(s) {missing} under {root}")
    return tuple(sorted(seen))


def files(*roots: str, root: Path = ROOT) -> list[str]:
    """:func:`closure` as a list of path strings (what a Snakemake rule takes as inputs)."""
    return [str(p) for p in closure(tuple(roots), root)]


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the package modules it imports (resolved to modules that exist), for every file."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        graph[name] = {m for m in imported_modules(path, root) if module_file(m, root) is not None}
    return graph


def all_files(roots: Iterable[str]) -> list[str]:
    """The union of the closures of several roots."""
    return sorted({p for r in roots for p in files(r)})
