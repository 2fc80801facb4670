"""`mopeft weights`: download the official SAM ViT-B checkpoint (resumable, sha256-verified)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "download the official SAM ViT-B checkpoint (resumable, sha256-verified)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory for sam_vit_b_01ec64.pth")


def run(args: argparse.Namespace) -> int:
    from mopeft.model.weights import download_vit_b

    print(download_vit_b(args.out))
    return 0
