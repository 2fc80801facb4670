"""``mopeft table NAME``: one of the study's tables from cell results, beside the study's values."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from mopeft.report.registry import TABLES, table_spec

HELP = "write a study table (4.1-4.8, a1) as CSV/Markdown/LaTeX with the study's values and the difference"


def resolve(name: str) -> Callable[[argparse.Namespace], object]:
    """Import a table's builder (``mopeft.report.registry.TABLES``); unknown names are user errors."""
    module_name, func = table_spec(name).builder.split(":", 1)
    return getattr(importlib.import_module(module_name), func)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=list(TABLES), metavar="NAME", help=f"one of {', '.join(TABLES)}")
    parser.add_argument("--cells", nargs="*", default=[], metavar="FILE", help="cell metrics.json files")
    parser.add_argument(
        "--params", nargs="*", default=[], metavar="FILE", help="`mopeft params --json` files (4.5)"
    )
    parser.add_argument(
        "--bench",
        nargs="*",
        default=[],
        metavar="FILE",
        help="`mopeft bench --json` files (4.5); several (e.g. one per machine) are combined, a later "
        "file's row for a method replacing an earlier one, and timings from different device models "
        "are marked in the table",
    )
    parser.add_argument(
        "--flops", nargs="*", default=[], metavar="FILE", help="`mopeft flops --json` files (4.5)"
    )
    parser.add_argument(
        "--meta", nargs="*", default=[], metavar="FILE", help="prepared meta.json files (4.1/4.2)"
    )
    parser.add_argument("--config", required=True, help="the run's config file (recorded as provenance)")
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="resamples of the test images for 95 %% intervals (needs each cell's per_image.npz); 0: none",
    )
    parser.add_argument(
        "--losses",
        action="store_true",
        help="4.3/4.4: flag cells whose training loss did not fall (reads their units/*/train_log.json)",
    )
    parser.add_argument("--paper-dir", help="folder of the study's CSVs (default: <repo>/paper)")
    parser.add_argument("--out", required=True, metavar="STEM", help="output stem; writes STEM.csv/.md/.tex")


def run(args: argparse.Namespace) -> int:
    resolve(args.name)(args)
    return 0
