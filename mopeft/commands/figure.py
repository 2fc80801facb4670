"""``mopeft figure NAME``: the report's figures from cell results, each as PNG + PDF with its numbers as CSV.

* ``gate-frequency``: Fig. 4.2 from MoPEFT cells' recorded gates;
* ``examples``: Fig. 4.1, fixed test images, their ground truth and each method's prediction
  (the cells' ``eval/examples/``; ``--data`` names the prepared datasets);
* ``training-curves``: every training run's loss per step, per dataset and method.
"""

from __future__ import annotations

import argparse

HELP = (
    "draw a report figure (gate-frequency: Fig. 4.2, examples: Fig. 4.1, training-curves) as PNG + PDF + CSV"
)

FIGURES: dict[str, str] = {
    "gate-frequency": "mopeft.report.figures:build_gate_frequency",
    "examples": "mopeft.report.examples:build_examples",
    "training-curves": "mopeft.report.curves:build_training_curves",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=list(FIGURES), metavar="NAME", help=f"one of {', '.join(FIGURES)}")
    parser.add_argument(
        "--cells",
        nargs="+",
        required=True,
        metavar="FILE",
        help="cell metrics.json files (gate-frequency: MoPEFT cells, whose 'gates' lists point to gates.npz)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="gate-frequency: gate value above which a module counts as called (default 0.5)",
    )
    parser.add_argument(
        "--data", nargs="*", default=[], metavar="META", help="examples: the prepared datasets' meta.json"
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="YAML",
        help="examples, training-curves: the run config (the labels of its peft_methods)",
    )
    parser.add_argument("--per-dataset", type=int, default=2, help="examples: images shown per dataset")
    parser.add_argument("--out", required=True, metavar="STEM", help="output stem; writes STEM.png/.pdf/.csv")


def run(args: argparse.Namespace) -> int:
    import importlib

    module_name, func = FIGURES[args.name].split(":", 1)
    getattr(importlib.import_module(module_name), func)(args)
    return 0
