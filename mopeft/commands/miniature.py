"""``mopeft miniature``: a tiny synthetic raw download, for tests and pipeline dry runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from mopeft.data.registry import dataset_module
from mopeft.errors import InputError
from mopeft.io import atomic_dir

HELP = "write a tiny synthetic copy of a dataset's raw download (original layout) into OUT"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset key (see `mopeft datasets`)")
    parser.add_argument("--out", required=True, help="raw folder, e.g. data/raw/KEY")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    module = dataset_module(args.dataset)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (out / "MINIATURE").exists():
        # never replace what may be a real (multi-GB, hand-downloaded) raw folder
        raise InputError(f"{out}: exists and is not a miniature; refusing to overwrite it")
    # Written to a sibling temp folder and renamed: a killed run never leaves a half miniature
    # that the MINIATURE marker would vouch for (atomic_dir: with the umask's permissions).
    with atomic_dir(out) as tmp:
        module.write_miniature(tmp, seed=args.seed)
    print(out)
    return 0
