"""What code a job's outputs depend on: one content hash per job, the rules' ``code`` param.

Why a hash in ``params`` and not the source files as inputs: Snakemake reruns a job whose inputs
are newer than its outputs, so with files as inputs any edit (a comment, a docstring, the package
version, a table title) re-planned the whole study, and ``--rerun-triggers mtime`` could not
switch code off. As a param the hash is governed by Snakemake's ``params`` trigger: it reruns
exactly the jobs whose number-changing code changed, ``--rerun-triggers mtime`` ignores code (make
behaviour), ``--touch`` records the new hash without rerunning, ``-R``/``--forcerun`` forces.

What counts, decided here and nowhere else (docs/architecture.md summarises it):

* **Which modules** (:func:`job_files`): the static closure of the imports of the job's command
  module and of the modules its rule selects by name (the cell's method, the dataset's module, the
  table's builder). Every ``import mopeft...`` / ``from mopeft... import`` / relative import
  anywhere in a file counts (function-level lazy imports too); imports by string (registries) are
  not followed, which is why a rule names the selected module. Packages' ``__init__`` count
  (importing ``mopeft.a.b`` runs them).
* **PEFT parts** (:data:`PARTS`): a part's module (``peft/lora.py``, ``peft/prefix.py``,
  ``peft/adapter.py``, ``peft/gates.py``) is imported by every method's shared block code, but
  its code runs only in a model that has the part. For a job of given methods it counts only if
  one of them switches the part on (the method class's ``use_lora = True``, ... read from the
  source, base classes followed) or imports the module itself. So editing LoRA's forward reruns
  the LoRA and MoPEFT cells, not VPT's.
* **What of a module** (:func:`module_digest`): its syntax tree (``ast``), so comments, blank lines
  and formatting never count, and without what cannot change a number:

  - docstrings and other bare string statements;
  - ``__version__`` assignments (a release bump);
  - display-only fields of the registries (:data:`DISPLAY_ONLY`: a method's ``label`` and
    ``description``, a table's ``title``, a dataset's display ``name``, ``citation`` and
    ``notes``, a source's download ``instructions``), positional or keyword;
  - argparse's ``help=`` texts (:data:`DISPLAY_KEYWORDS`), in any call.

What does not count: files that are not Python; the config (its values reach jobs as params
already); the workflow's own code (``workflow/rules/*.smk``, ``mopeft.plan.workflow``: what it
changes in a job changes that job's params or shell command, which Snakemake compares too). Two
jobs have no code hash because their bytes are fixed from outside: ``weights`` (the config's
sha256) and ``raw`` when it downloads (the publisher's files).

Standard library only: the DAG imports this at parse time.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

PACKAGE = "mopeft"
ROOT = Path(__file__).resolve().parent  # the package folder

# Registry dataclass -> (module defining it, its display-only fields). Text a person reads (column
# labels, titles, help); no number is computed from it. A changed label reaches the tables only
# when they are rebuilt: `snakemake -R table` (README "Working with the pipeline").
DISPLAY_ONLY: dict[str, tuple[str, tuple[str, ...]]] = {
    "MethodSpec": ("mopeft.methods.registry", ("label", "description")),
    "TableSpec": ("mopeft.report.registry", ("title",)),
    "DatasetSpec": ("mopeft.data.spec", ("name", "citation", "notes")),
    "Source": ("mopeft.data.spec", ("instructions",)),
}
DISPLAY_KEYWORDS = ("help",)  # argparse's add_argument/add_parser help texts

# A method class's flag -> the PEFT part module it switches on (mopeft.methods.base.PEFTMethod).
PARTS: dict[str, str] = {
    "use_lora": "mopeft.peft.lora",
    "use_prefix": "mopeft.peft.prefix",
    "use_adapter": "mopeft.peft.adapter",
    "gated": "mopeft.peft.gates",
}
METHOD_OBJECT = "METHOD"  # what a method module defines (mopeft.methods.registry)


# ----------------------------------------------------------------------------- import closure
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


@functools.cache
def _tree(path: Path) -> ast.Module:
    """A module's syntax tree, parsed once per process (the DAG reads the code once)."""
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _import_base(node: ast.ImportFrom, path: Path, root: Path) -> str:
    """The absolute module a ``from ... import`` names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    here = _module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(base_parts + ([node.module] if node.module else []))


@functools.cache
def imported_modules(path: Path, root: Path = ROOT) -> frozenset[str]:
    """Every ``mopeft`` module a file imports, at any depth of its code (``from x import y``: both
    ``x`` and ``x.y``, since ``y`` may be a submodule)."""
    found: set[str] = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _import_base(node, path, root)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return frozenset(m for m in found if m == PACKAGE or m.startswith(PACKAGE + "."))


def _parents(module: str) -> list[str]:
    """Importing ``mopeft.a.b`` runs ``mopeft/__init__`` and ``mopeft/a/__init__`` first."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@functools.cache
def closure(roots: tuple[str, ...], root: Path = ROOT) -> tuple[Path, ...]:
    """Sorted files of the modules ``roots`` import, transitively, with their packages' ``__init__``."""
    missing = [m for m in roots if module_file(m, root) is None]
    if missing:
        raise ValueError(f"no source file for module(s) {missing} under {root}")
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
    return tuple(sorted(seen))


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the package modules it imports (resolved to modules that exist), for every file."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        name = _module_name(path, root)
        graph[name] = {m for m in imported_modules(path, root) if module_file(m, root) is not None}
    return graph


# ----------------------------------------------------------------------------- PEFT parts
def _class_def(module: str, name: str, root: Path, depth: int = 0) -> tuple[str, ast.ClassDef] | None:
    """(defining module, class) of ``name`` as seen from ``module``: defined there, or imported
    there from another package module (followed). None outside the package."""
    path = module_file(module, root)
    if path is None or depth > 20:
        return None
    tree = _tree(path)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _class_def(_import_base(node, path, root), alias.name, root, depth + 1)
    return None


def _class_flags(module: str, name: str, root: Path, depth: int = 0) -> dict[str, bool]:
    """The :data:`PARTS` flags a class sets, its own over its bases' (first base first). A flag
    set to anything but a literal ``True``/``False`` counts as on (the hash cannot evaluate it)."""
    found = _class_def(module, name, root)
    if found is None or depth > 20:
        return {}
    where, node = found
    flags: dict[str, bool] = {}
    for stmt in node.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in PARTS:
                value = stmt.value
                literal = isinstance(value, ast.Constant) and isinstance(value.value, bool)
                flags.setdefault(target.id, value.value if literal else True)
    for base in node.bases:
        if isinstance(base, ast.Name):
            for flag, on in _class_flags(where, base.id, root, depth + 1).items():
                flags.setdefault(flag, on)
    return flags


@functools.cache
def method_parts(module: str, root: Path = ROOT) -> frozenset[str]:
    """The :data:`PARTS` modules a method implementation module uses: those its ``METHOD``'s class
    switches on, and those the module imports itself. All of them when ``METHOD`` is not an
    instance of a class the source shows (the hash then errs towards rerunning)."""
    path = module_file(module, root)
    if path is None:
        raise ValueError(f"no source file for method module {module!r} under {root}")
    cls = None
    for node in _tree(path).body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == METHOD_OBJECT for t in node.targets)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
        ):
            cls = node.value.func.id
    if cls is None or _class_def(module, cls, root) is None:
        return frozenset(PARTS.values())
    used = {PARTS[flag] for flag, on in _class_flags(module, cls, root).items() if on}
    return frozenset(used | (imported_modules(path, root) & set(PARTS.values())))


@functools.cache
def job_files(roots: tuple[str, ...], methods: tuple[str, ...] = (), root: Path = ROOT) -> tuple[Path, ...]:
    """The files whose code counts for a job: :func:`closure` of its command (and other ``roots``)
    and of its ``methods``' implementation modules, less the PEFT part modules none of those
    methods uses. Without methods (data, combine, tables) nothing is left out."""
    files = closure(tuple(roots) + tuple(methods), root)
    if not methods:
        return files
    used = set().union(*(method_parts(m, root) for m in methods))
    unused = {module_file(p, root) for p in PARTS.values() if p not in used}
    return tuple(p for p in files if p not in unused)


# ----------------------------------------------------------------------------- normalised source
@functools.cache
def dataclass_fields(cls: str, root: Path = ROOT) -> tuple[str, ...]:
    """A :data:`DISPLAY_ONLY` dataclass's fields in ``__init__`` order (its annotated class
    attributes), read from the source: how a positional argument is matched to its field."""
    module, _ = DISPLAY_ONLY[cls]
    found = _class_def(module, cls, root)
    if found is None:
        raise ValueError(f"{module} defines no class {cls} under {root}")
    return tuple(
        stmt.target.id
        for stmt in found[1].body
        if isinstance(stmt, ast.AnnAssign)
        and isinstance(stmt.target, ast.Name)
        and "ClassVar" not in ast.unparse(stmt.annotation)
    )


def _is_version(target: ast.expr) -> bool:
    return isinstance(target, ast.Name) and target.id == "__version__"


class _Normaliser(ast.NodeTransformer):
    """Drops what :func:`module_digest` does not count (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def visit_Expr(self, node: ast.Expr) -> ast.AST | None:
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            return None  # a docstring, or any bare string statement: no effect
        return self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        return None if any(_is_version(t) for t in node.targets) else self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST | None:
        return None if _is_version(node.target) else self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        display = set(DISPLAY_KEYWORDS)
        if name in DISPLAY_ONLY:
            display |= set(DISPLAY_ONLY[name][1])
            fields = dataclass_fields(name, self.root)
            for i, arg in enumerate(node.args):
                if isinstance(arg, ast.Starred):
                    break  # later positions are unknown: keep them
                if i < len(fields) and fields[i] in display:
                    node.args[i] = ast.Constant(None)  # the position stays, the text goes
        node.keywords = [k for k in node.keywords if k.arg not in display]
        return node


def _canonical(node: object) -> str:
    """A syntax tree as text: node types and field values, no positions (``ast.dump`` without
    attributes), empty fields left out so that a Python release adding an empty field to a node
    type does not change every hash."""
    if isinstance(node, ast.AST):
        fields = ((f, _canonical(getattr(node, f, None))) for f in node._fields)
        return f"{type(node).__name__}({','.join(f'{f}={v}' for f, v in fields if v not in ('None', '[]'))})"
    if isinstance(node, list):
        return f"[{','.join(_canonical(x) for x in node)}]"
    return repr(node)


def normalised(path: Path, root: Path = ROOT) -> str:
    """The part of a module's source that counts, as canonical text (tests compare these)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return _canonical(_Normaliser(root).visit(tree))


@functools.cache
def _digest(path: Path, root: Path, stamp: tuple[int, int]) -> str:
    return hashlib.sha256(normalised(path, root).encode()).hexdigest()


def module_digest(path: Path, root: Path = ROOT) -> str:
    """sha256 of :func:`normalised`, computed once per file version (its mtime and size)."""
    st = path.stat()
    return _digest(path, root, (st.st_mtime_ns, st.st_size))


@functools.cache
def digest(roots: tuple[str, ...], methods: tuple[str, ...] = (), root: Path = ROOT) -> str:
    """A job's code hash (16 hex digits): the module names and digests of its :func:`job_files`.

    Cached per process for the whole DAG (each distinct command/method pair is hashed once)."""
    h = hashlib.sha256()
    for path in job_files(tuple(roots), tuple(methods), root):
        h.update(f"{path.relative_to(root).as_posix()}\0{module_digest(path, root)}\n".encode())
    return h.hexdigest()[:16]


def command_digest(command: str, *modules: str, methods: Sequence[str] = (), root: Path = ROOT) -> str:
    """:func:`digest` of ``mopeft <command>`` (its module ``mopeft.commands.<command>``), the
    ``modules`` it imports by name, and ``methods`` (implementation modules, parts filtered)."""
    return digest((f"mopeft.commands.{command}", *modules), tuple(methods), root)


def clear_caches() -> None:
    """Forget every parsed tree, closure and digest (a test that edits sources in one process)."""
    for cached in (
        _tree,
        imported_modules,
        closure,
        method_parts,
        job_files,
        dataclass_fields,
        _digest,
        digest,
    ):
        cached.cache_clear()
