"""``mopeft bootstrap``: a cell's mIoU interval, and optionally the paired difference to another cell."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "bootstrap interval of a cell's mIoU over test images (seeds combined), or a paired difference"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cell",
        nargs="+",
        required=True,
        type=Path,
        help="the runs of one cell: its seed folders (results/<run>/cells/<dataset>/<method>/<variant>/"
        "seed<k>, or their metrics.json), a unit eval folder, or a per_image.npz",
    )
    parser.add_argument(
        "--vs",
        nargs="+",
        type=Path,
        help="the runs of another cell on the same test images: adds the paired difference cell − vs",
    )
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws (default 0)")
    parser.add_argument("--out", type=Path, help="also write the JSON here (atomically)")


def run(args: argparse.Namespace) -> int:
    from mopeft.evaluation.bootstrap import cell_interval, load_cell_runs, paired_difference
    from mopeft.io import write_json

    opts = {"n_resamples": args.resamples, "confidence": args.confidence, "seed": args.seed}
    runs = load_cell_runs(args.cell)
    result = {"cell": {"runs": [str(p) for p in args.cell], **cell_interval(runs, **opts)}}
    if args.vs:
        other = load_cell_runs(args.vs)
        result["vs"] = {"runs": [str(p) for p in args.vs], **cell_interval(other, **opts)}
        result["paired"] = paired_difference(runs, other, **opts)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.out:
        write_json(args.out, result)
    return 0
