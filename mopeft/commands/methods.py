"""`mopeft methods`: list the fine-tuning methods and their default options."""

from __future__ import annotations

import argparse
import json

HELP = "list fine-tuning methods and their default options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from mopeft.methods import METHODS

    info = {
        name: {"label": m.label, "defaults": dict(m.defaults), "description": m.description}
        for name, m in METHODS.items()
    }
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        for name, item in info.items():
            opts = " ".join(f"{k}={v}" for k, v in item["defaults"].items())
            print(f"{name:<11} {item['description']}" + (f"  [{opts}]" if opts else ""))
    return 0
