"""`mopeft params`: exact trainable / total parameter counts of a method (no weights needed)."""

from __future__ import annotations

import argparse
import json

from mopeft.commands.options import add_set_argument, parse_sets

HELP = "exact parameter counts of a method (trainable, PEFT, gates, decoder, reparam vs folded)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mopeft.model.arch import ARCHS

    parser.add_argument("--arch", default="vit_b", choices=list(ARCHS), help="architecture")
    parser.add_argument("--method", required=True)
    add_set_argument(parser)
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from mopeft.measure.params import method_parameter_counts

    counts = method_parameter_counts(
        args.arch, args.method, parse_sets(args.sets), args.num_classes, args.image_size
    )
    if args.json:
        print(json.dumps(counts, indent=2, sort_keys=True))
    else:
        for key, value in counts.items():
            print(f"{key:<36} {value:,.4f}" if isinstance(value, float) else f"{key:<36} {value}")
    return 0
