"""``mopeft download``: fetch a dataset's raw sources (or say exactly which to fetch by hand).

Every source is tried before anything is reported, so one run lists all the files still to fetch
by hand (manual sources and failed downloads alike) in one error, and what could be downloaded is
already in OUT.
"""

from __future__ import annotations

import argparse

from mopeft.data.sources.download import download_dataset

HELP = (
    "download a dataset's raw files into OUT (cached); every file still missing (manual sources, "
    "failed downloads) is listed in one error with instructions"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, help="dataset key (see `mopeft datasets`)")
    parser.add_argument("--out", required=True, help="raw folder, e.g. data/raw/KEY")


def run(args: argparse.Namespace) -> int:
    for path in download_dataset(args.dataset, args.out):
        print(path)
    return 0
