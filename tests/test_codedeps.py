"""The jobs' code hashes (mopeft.codedeps): what counts and what does not, per job.

Each test edits a scratch copy of the package and compares hashes in this process (no Snakemake:
tests/test_rerun_code.py shows the same through `snakemake -n`)."""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mopeft import codedeps
from mopeft.methods.registry import METHOD_SPECS

LORA_USERS = {"lora", "mopeft", "mopeft_logit"}


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """A scratch copy of the package (its root for codedeps' ``root``), caches cleared around it."""
    root = tmp_path / "mopeft"
    shutil.copytree(codedeps.ROOT, root, ignore=shutil.ignore_patterns("__pycache__"))
    codedeps.clear_caches()
    yield root
    codedeps.clear_caches()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, (path, old)
    path.write_text(text.replace(old, new))
    codedeps.clear_caches()


def _hashes(root: Path, command: str = "train") -> dict[str, str]:
    """The code hash of ``mopeft <command>`` for every method's cells."""
    return {
        m: codedeps.command_digest(command, methods=[s.module], root=root) for m, s in METHOD_SPECS.items()
    }


def _everything(root: Path) -> dict[str, str]:
    """Hashes of every kind of job: per method, per dataset, the tables."""
    out = {
        f"{c}/{m}": h for c in ("train", "evaluate", "params", "flops") for m, h in _hashes(root, c).items()
    }
    out["prepare/kvasir_instrument"] = codedeps.command_digest(
        "prepare", "mopeft.data.datasets.kvasir_instrument", root=root
    )
    out["table"] = codedeps.command_digest("table", "mopeft.report.main_tables", root=root)
    return out


def test_comments_docstrings_the_version_labels_and_help_texts_do_not_count(package):
    before = _everything(package)
    _edit(package / "__init__.py", '__version__ = "0.1.0"', '__version__ = "0.2.0"')
    _edit(package / "peft/lora.py", '"""Low-rank updates', '"""Low-rank (reworded) updates')
    _edit(
        package / "peft/lora.py",
        "        a_q, a_v = a.split(",
        "        # a comment\n        a_q, a_v = a.split(",
    )
    # a method's label and description (positional), a table's title, a dataset's display name
    _edit(package / "methods/registry.py", '            "LoRA",\n', '            "LoRA (r=8)",\n')
    _edit(package / "methods/registry.py", '"LoRA on q,v of every block + decoder FT"', '"LoRA on q and v"')
    _edit(package / "report/registry.py", '"Table 4.3: MoPEFT vs.', '"Table 4.3 (renamed): MoPEFT vs.')
    _edit(
        package / "data/datasets/kvasir_instrument.py", 'name="Kvasir-Instr.",', 'name="Kvasir Instrument",'
    )
    _edit(package / "commands/train.py", 'help="main, a PAXRay-4 task, or fold<i>"', 'help="the unit"')
    assert _everything(package) == before


def test_a_code_change_counts_for_the_jobs_that_run_it(package):
    before = _everything(package)
    _edit(package / "commands/train.py", 'default="main", help=', 'default="main2", help=')
    _edit(
        package / "data/datasets/kvasir_instrument.py",
        'name="Kvasir-Instr.",',
        'name="Kvasir-Instr.", mess_key="x",',
    )
    _edit(package / "methods/registry.py", '{"r": 8, "alpha": None}', '{"r": 4, "alpha": None}')
    after = _everything(package)
    changed = {k for k in before if before[k] != after[k]}
    assert {"train/lora", "prepare/kvasir_instrument", "evaluate/vpt"} <= changed


def test_a_lora_edit_changes_the_hash_of_the_methods_that_use_lora_only(package):
    """Every method's blocks import peft/lora.py, but its code runs only where LoRA is switched on
    (LoRA, and MoPEFT and its subclass MoPEFT-logit, which set use_lora)."""
    for command in ("train", "evaluate", "params", "flops", "bench"):
        before = _hashes(package, command)
        _edit(
            package / "peft/lora.py",
            "        a_q, a_v = a.split(",
            "        a = a + 0.0\n        a_q, a_v = a.split(",
        )
        after = _hashes(package, command)
        _edit(package / "peft/lora.py", "        a = a + 0.0\n", "")
        assert {m for m in before if before[m] != after[m]} == LORA_USERS, command


def test_each_part_counts_for_the_methods_that_switch_it_on(package):
    parts = {
        m: sorted(p.rsplit(".", 1)[1] for p in codedeps.method_parts(s.module, package))
        for m, s in METHOD_SPECS.items()
    }
    assert parts["vpt"] == parts["baseline"] == parts["full_ft"] == []
    assert parts["vpt_deep"] == ["prefix"] and parts["adapter"] == ["adapter"]
    assert parts["mopeft"] == parts["mopeft_logit"] == ["adapter", "gates", "lora", "prefix"]


def test_a_method_the_source_does_not_show_counts_every_part(package):
    """A part switched on by an expression, a METHOD built by a factory, or a part module the
    method imports itself: the hash cannot tell, so it counts (errs towards rerunning)."""
    (package / "methods/computed.py").write_text(
        "from mopeft.methods.base import PEFTMethod\n\n\n"
        "class Computed(PEFTMethod):\n    use_prefix = 1 > 0\n\n\nMETHOD = Computed()\n"
    )
    (package / "methods/factory.py").write_text(
        "from mopeft.methods.lora import LoRA\n\nMETHOD = [LoRA()][0]\n"
    )
    (package / "methods/direct.py").write_text(
        "from mopeft.methods.base import Method\nfrom mopeft.peft.adapter import Adapter\n\n\n"
        "class Direct(Method):\n    pass\n\n\nMETHOD = Direct()\n"
    )
    codedeps.clear_caches()
    assert codedeps.method_parts("mopeft.methods.computed", package) == {"mopeft.peft.prefix"}
    assert codedeps.method_parts("mopeft.methods.factory", package) == set(codedeps.PARTS.values())
    assert codedeps.method_parts("mopeft.methods.direct", package) == {"mopeft.peft.adapter"}


def test_the_parts_table_matches_the_methods_base_class():
    """Each flag of PARTS is a PEFTMethod attribute, and the method base or the block it builds
    imports its module (so the table names what the block code really switches)."""
    base = codedeps.module_file("mopeft.methods.base")
    tree = ast.parse(base.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PEFTMethod")
    flags = {
        t.id for s in cls.body if isinstance(s, ast.Assign) for t in s.targets if isinstance(t, ast.Name)
    }
    assert set(codedeps.PARTS) <= flags
    block = codedeps.module_file("mopeft.peft.block")
    assert set(codedeps.PARTS.values()) <= codedeps.imported_modules(base) | codedeps.imported_modules(block)


def test_every_display_only_field_is_a_field_of_its_class():
    """A renamed field would silently count again; the positions follow the class's field order."""
    for cls, (_, fields) in codedeps.DISPLAY_ONLY.items():
        assert set(fields) <= set(codedeps.dataclass_fields(cls)), cls
    assert codedeps.dataclass_fields("MethodSpec")[:4] == ("name", "label", "description", "module")


def test_a_label_keeps_its_position(tmp_path):
    """Dropping a positional display argument must not shift the ones after it onto its place."""
    path = tmp_path / "m.py"

    def norm(call: str) -> str:
        path.write_text(call + "\n")
        return codedeps.normalised(path)

    base = norm('MethodSpec("x", "X", "an x", "mopeft.methods.x")')
    assert norm('MethodSpec("x", "Y", "another", "mopeft.methods.x")') == base
    assert norm('MethodSpec("x", "X", "an x", "mopeft.methods.y")') != base
    assert norm('MethodSpec("x", "mopeft.methods.x", "an x", "X")') != base
    assert norm('MethodSpec("x", label="X", description="an x", module="mopeft.methods.x")') == norm(
        'MethodSpec("x", label="Z", module="mopeft.methods.x")'
    )
