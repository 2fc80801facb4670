"""`mopeft weights`: the base SAM checkpoint of an architecture, verified by sha256.

ViT-B, ViT-L and ViT-H are Meta's official downloads (resumable; URL and sha256 from the
architecture registry, mopeft.model.arch); ``tiny`` is the checkpoint that ships with the package
(made by `mopeft pretrain-tiny`), copied so that all of them flow through the same pipeline rule.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "fetch the base SAM checkpoint (vit_b/vit_l/vit_h: official download; tiny: packaged), sha256-verified"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mopeft.model.arch import ARCHS

    parser.add_argument("--out", type=Path, required=True, help="directory for the checkpoint file")
    parser.add_argument(
        "--arch", choices=list(ARCHS), default="vit_b", help="architecture whose weights to fetch"
    )


def run(args: argparse.Namespace) -> int:
    from mopeft.model.weights import fetch_weights

    print(fetch_weights(args.arch, args.out))
    return 0
