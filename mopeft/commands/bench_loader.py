"""`mopeft bench-loader`: images/s of the training input pipeline for several worker counts."""

from __future__ import annotations

import argparse
from pathlib import Path

from mopeft.errors import InputError

HELP = "measure the training loader's images/s (JPEG and PNG, 0/2/4 workers) and the workers a GPU needs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=int, default=1024)
    parser.add_argument("--count", type=int, default=24, help="generated pairs per format")
    parser.add_argument("--workers", default="0,2,4", help="comma-separated worker counts (must include 0)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12, help="timed batches per setting")
    parser.add_argument("--target", type=float, default=40.0, help="img/s the GPU consumes")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")


def run(args: argparse.Namespace) -> int:
    from mopeft.io import write_json
    from mopeft.measure.loader_bench import format_table, run

    workers = tuple(int(w) for w in args.workers.split(","))
    if 0 not in workers:
        raise InputError("--workers must include 0 (the per-worker rate comes from it)")
    result = run(args.image_size, args.count, workers, args.batch_size, args.steps, args.target)
    if args.json:
        write_json(args.json, result)
    print(format_table(result))
    return 0
