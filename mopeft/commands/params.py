"""`mopeft params`: exact trainable / total parameter counts of a method (no weights needed)."""

from __future__ import annotations

import argparse
import json

HELP = "exact parameter counts of a method (trainable, PEFT, gates, decoder, reparam vs folded)"


def parse_set(items: list[str] | None) -> dict[str, str]:
    """``["r=8", "alpha=16"]`` -> {"r": "8", "alpha": "16"} (types are coerced by the method)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="vit_b", help="architecture (vit_b | tiny)")
    parser.add_argument("--method", required=True)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="method option (repeatable)")
    parser.add_argument("--num-classes", type=int, default=2)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from mopeft.measure.params import method_parameter_counts

    counts = method_parameter_counts(
        args.model, args.method, parse_set(args.set), args.num_classes, args.image_size
    )
    if args.json:
        print(json.dumps(counts, indent=2, sort_keys=True))
    else:
        for key, value in counts.items():
            print(f"{key:<36} {value:,.4f}" if isinstance(value, float) else f"{key:<36} {value}")
    return 0
