"""mopeft combine: merge a cell's unit evaluations into the cell's metrics.json."""

from __future__ import annotations

import argparse
from pathlib import Path

from mopeft.errors import InputError
from mopeft.evaluation.combine import combine_units
from mopeft.io import read_json, write_json

HELP = "combine unit evaluations (PAXRay-4 tasks, k-fold units) into one cell metrics.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--units", nargs="+", required=True, type=Path, help="unit eval folders")
    p.add_argument("--dataset-meta", required=True, type=Path, help="prepared dataset meta.json")
    p.add_argument(
        "--kfold",
        type=int,
        default=2,
        help="folds of a dataset without a train split (as given to train/evaluate); every fold "
        "0..K-1 must be among --units exactly once",
    )
    p.add_argument("--variant", required=True, help="the cell's variant: default, or an ablation's (r16)")
    p.add_argument("--seed", required=True, type=int, help="the cell's training seed")
    p.add_argument("--out", required=True, type=Path)


def run(args: argparse.Namespace) -> int:
    meta = read_json(args.dataset_meta)
    first = read_json(args.units[0] / "metrics.json")
    context = {k: first.get(k) for k in ("method", "method_options", "arch", "image_size", "weights")}
    context |= {"variant": args.variant, "seed": args.seed}
    if args.kfold < 2:
        raise InputError("--kfold must be >= 2")
    cell = combine_units(args.units, meta, args.out.parent, context, args.kfold, args.dataset_meta)
    write_json(args.out, cell)
    return 0
