"""``mopeft figure gate-frequency``: Fig. 4.2 from MoPEFT cells' recorded gates."""

from __future__ import annotations

import argparse

HELP = "draw a study figure (gate-frequency: Fig. 4.2) as PNG + PDF, with its numbers as CSV"

FIGURES: dict[str, str] = {"gate-frequency": "mopeft.report.figures:build_gate_frequency"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=list(FIGURES), metavar="NAME", help=f"one of {', '.join(FIGURES)}")
    parser.add_argument(
        "--cells",
        nargs="+",
        required=True,
        metavar="FILE",
        help="metrics.json of MoPEFT cells (their 'gates' lists point to gates.npz)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="gate value above which a module counts as called (default 0.5, the sigmoid midpoint)",
    )
    parser.add_argument("--out", required=True, metavar="STEM", help="output stem; writes STEM.png/.pdf/.csv")


def run(args: argparse.Namespace) -> int:
    import importlib

    module_name, func = FIGURES[args.name].split(":", 1)
    getattr(importlib.import_module(module_name), func)(args)
    return 0
