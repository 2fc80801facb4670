"""``mopeft prepare``: raw download -> ``<out>/<key>/{train,test}/{images,labels}`` + meta.json."""

from __future__ import annotations

import argparse

from mopeft.data.common import MESS_TILE, PrepareOptions
from mopeft.data.prepare import prepare_dataset

HELP = "prepare one dataset from its raw download into the uniform layout (atomic; meta.json last)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset key (see `mopeft datasets`)")
    parser.add_argument("--raw", required=True, help="raw folder, e.g. data/raw/KEY")
    parser.add_argument("--out", required=True, help="prepared root; the dataset lands in OUT/KEY")
    parser.add_argument("--tile-size", type=int, default=MESS_TILE, help="tile size for tiled datasets")


def run(args: argparse.Namespace) -> int:
    if args.tile_size < 1:
        raise ValueError("--tile-size must be positive")
    options = PrepareOptions(tile_size=args.tile_size)
    target = prepare_dataset(args.dataset, args.raw, args.out, options)
    print(target)
    return 0
