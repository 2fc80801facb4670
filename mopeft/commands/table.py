"""``mopeft table NAME``: one of the study's tables from cell results, beside the study's values."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

HELP = "write a study table (4.1-4.8, a1) as CSV/Markdown/LaTeX with the study's values and the difference"

# Table name -> "module:function". A builder takes the parsed arguments below and writes
# ``args.out`` + .csv/.md/.tex itself (through mopeft.report.tables.write_table). Adding a table =
# one builder + one line here (or ``register_table`` from a plugin).
TABLES: dict[str, str] = {
    "4.1": "mopeft.report.dataset_tables:build_4_1",
    "4.2": "mopeft.report.dataset_tables:build_4_2",
    "4.3": "mopeft.report.main_tables:build_4_3",
    "4.4": "mopeft.report.main_tables:build_4_4",
    "4.5": "mopeft.report.efficiency:build_4_5",
    "4.6": "mopeft.report.ablations:build_4_6",
    "4.7": "mopeft.report.ablations:build_4_7",
    "4.8": "mopeft.report.ablations:build_4_8",
    "a1": "mopeft.report.table_a1:build",
}


def register_table(name: str, target: str) -> None:
    """Register a builder ``"module:function"`` under ``name`` (checked when the table is built)."""
    if ":" not in target:
        raise ValueError(f"table builder must be 'module:function', got {target!r}")
    TABLES[name] = target


def resolve(name: str) -> Callable[[argparse.Namespace], object]:
    """Import a table's builder; unknown names and missing modules are user errors, not tracebacks."""
    try:
        module_name, func = TABLES[name].split(":", 1)
    except KeyError:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(TABLES)}") from None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ValueError(f"table {name!r}: builder module {module_name} is not available") from None
        raise
    return getattr(module, func)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=list(TABLES), metavar="NAME", help=f"one of {', '.join(TABLES)}")
    parser.add_argument("--cells", nargs="*", default=[], metavar="FILE", help="cell metrics.json files")
    parser.add_argument(
        "--params", nargs="*", default=[], metavar="FILE", help="`mopeft params --json` files (4.5)"
    )
    parser.add_argument("--bench", metavar="FILE", help="`mopeft bench --json` file (4.5)")
    parser.add_argument(
        "--flops", nargs="*", default=[], metavar="FILE", help="`mopeft flops --json` files (4.5)"
    )
    parser.add_argument(
        "--meta", nargs="*", default=[], metavar="FILE", help="prepared meta.json files (4.1/4.2)"
    )
    parser.add_argument("--config", required=True, help="the run's config file (recorded as provenance)")
    parser.add_argument("--paper-dir", help="folder of the study's CSVs (default: <repo>/results/paper)")
    parser.add_argument("--out", required=True, metavar="STEM", help="output stem; writes STEM.csv/.md/.tex")


def run(args: argparse.Namespace) -> int:
    resolve(args.name)(args)
    return 0
