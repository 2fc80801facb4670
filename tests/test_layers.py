"""The package imports downward only, what the DAG imports is torch-free, and the import closure
behind the jobs' code hashes (mopeft.codedeps) follows every import."""

from __future__ import annotations

import re
from pathlib import Path

from mopeft.codedeps import ROOT, closure, import_graph

REPO = Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer's and lower layers' modules, never higher ones.
LAYERS: list[tuple[str, ...]] = [
    ("mopeft", "mopeft.errors", "mopeft.io", "mopeft.torch_files", "mopeft.device", "mopeft.codedeps"),
    ("mopeft.detection",),  # FAIR-1M geometry, XML and AP: torch-free
    ("mopeft.data",),
    ("mopeft.model",),
    ("mopeft.peft",),
    ("mopeft.methods",),
    ("mopeft.train", "mopeft.evaluation"),
    ("mopeft.measure",),
    ("mopeft.report",),
    ("mopeft.plan",),  # a run's jobs and their modeled resources (reads the table registry)
    ("mopeft.commands", "mopeft.cli"),
]


def layer(module: str) -> tuple[int, str]:
    """(rank, package) of a module: the longest matching prefix in LAYERS."""
    best = (-1, "", "")
    for rank, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best[2]):
                best = (rank, p.split(".")[1] if "." in p else p, p)
    assert best[0] >= 0, f"{module} is in no layer"
    return best[0], best[1]


def test_imports_go_downward_only():
    upward = []
    for module, deps in import_graph().items():
        rank, package = layer(module)
        for dep in deps:
            dep_rank, dep_package = layer(dep)
            if dep_rank > rank:
                upward.append(f"{module} -> {dep}")
            elif dep_rank == rank and dep_package != package and rank > 0:
                upward.append(f"{module} -> {dep} (sideways)")
    assert not upward, "\n".join(sorted(upward))


def _workflow_imports() -> set[str]:
    """The package modules the Snakefile and workflow/rules/*.smk import at start-up."""
    texts = [(REPO / "Snakefile").read_text()] + [
        p.read_text() for p in (REPO / "workflow/rules").glob("*.smk")
    ]
    return {
        m for text in texts for m in re.findall(r"^\s*(?:from|import)\s+(mopeft[\w.]*)", text, flags=re.M)
    }


def test_registries_and_detection_geometry_import_no_torch():
    """What the DAG and the report read at start-up must not pull in torch."""
    dag = _workflow_imports()
    assert "mopeft.plan.workflow" in dag  # the workflow's logic (common.smk is a thin layer over it)
    for root in (
        *sorted(dag),
        "mopeft.methods.registry",
        "mopeft.report.registry",
        "mopeft.plan.jobs",  # the DAG's grid names and resource-plan look-up
        "mopeft.plan.workflow",  # config checks, paths, flags, resources, code hashes
        "mopeft.codedeps",
        "mopeft.detection.ap",
    ):
        torch_free = all(
            "import torch" not in p.read_text() and "from torch" not in p.read_text()
            for p in closure((root,))
        )
        assert torch_free, root


def test_closure_follows_lazy_imports_and_stays_inside_the_package():
    files = {
        p.relative_to(ROOT).as_posix()
        for p in closure(("mopeft.commands.prepare", "mopeft.data.datasets.fair1m"))
    }
    # FAIR-1M's label ids come from the class order in detection/__init__.py: a preparer input.
    assert {
        "detection/__init__.py",
        "detection/xml_io.py",
        "detection/rotated.py",
        "data/synthetic/miniature.py",
    } <= files
    assert not any(f.startswith(("train/", "model/", "report/")) for f in files)
    train = {
        p.relative_to(ROOT).as_posix() for p in closure(("mopeft.commands.train", "mopeft.methods.lora"))
    }
    assert "methods/lora.py" in train and "methods/vpt.py" not in train  # other methods rerun nothing
    assert "data/sources/archive.py" not in train  # the loader does not import the preparers' machinery
