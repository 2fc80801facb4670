"""`mopeft weights`: the base SAM checkpoint of an architecture, verified by sha256.

ViT-B is the official download (resumable); ``tiny`` is the checkpoint that ships with the package
(made by `mopeft pretrain-tiny`), copied so that both flow through the same pipeline rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fetch the base SAM checkpoint (vit_b: official download; tiny: packaged), sha256-verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory for the checkpoint file")
    parser.add_argument(
        "--arch", choices=["vit_b", "tiny"], default="vit_b", help="architecture whose weights to fetch"
    )


def run(args: argparse.Namespace) -> int:
    from mopeft.model.weights import download_vit_b, install_tiny

    print(download_vit_b(args.out) if args.arch == "vit_b" else install_tiny(args.out))
    return 0
