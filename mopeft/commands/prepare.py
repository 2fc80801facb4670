"""``mopeft prepare``: raw download -> ``<out>/<key>/{train,test}/{images,labels}`` + meta.json.

``--from-mess ROOT`` takes the test split from a tree MESS has already prepared instead
(:mod:`mopeft.data.prepared.mess_tree`); the train split still comes from ``--raw``.

A registered dataset is named by ``--dataset KEY --raw DIR``; a folder dataset of the config
(``custom_datasets``) by ``--spec FILE``, the resolved entry the pipeline writes
(:func:`mopeft.data.folder.spec.resolve`). Both end in the same atomic write with meta.json last.
"""

from __future__ import annotations

import argparse
import importlib

from mopeft.data.datasets.common import MESS_TILE, TEST_IMAGE_MODES, PrepareOptions
from mopeft.data.prepared.write import prepare_dataset
from mopeft.data.registry import MESS_IMPORTER
from mopeft.errors import InputError

# MESS_IMPORTER is imported by name, like the folder preparer: an edit to the MESS import is then no
# code change of the ordinary preparation's jobs (mopeft.codedeps follows imports, not strings).

HELP = "prepare a dataset (registered, or a folder dataset's --spec) into the uniform layout; meta.json last"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="dataset key (see `mopeft datasets`)")
    parser.add_argument("--raw", help="raw folder, e.g. data/raw/KEY")
    parser.add_argument(
        "--from-mess",
        metavar="ROOT",
        help="take the test split from a tree MESS has already prepared (its $DETECTRON2_DATASETS root), "
        "checked against the registry; the train split still comes from --raw (not needed for k-fold "
        "datasets: Dark Zurich, DRAM, CryoNuSeg)",
    )
    parser.add_argument(
        "--spec",
        help="a folder dataset instead: the JSON of a resolved config custom_datasets entry "
        "(written by the pipeline's custom_spec rule)",
    )
    parser.add_argument("--out", required=True, help="prepared root; the dataset lands in OUT/KEY")
    parser.add_argument("--tile-size", type=int, default=MESS_TILE, help="tile size for tiled datasets")
    parser.add_argument(
        "--test-images",
        choices=TEST_IMAGE_MODES,
        default="bytes",
        help="bytes (default): copy 8-bit RGB test images as published; mess: encode them exactly as "
        "MESS's prepare scripts do (CHASE DB1, ATLANTIS: JPEG re-save at quality 75; FoodSeg103: raw "
        "even when not RGB), for bit-identical inputs in a comparison with MESS",
    )


def run(args: argparse.Namespace) -> int:
    if args.spec:
        if args.dataset or args.raw or args.from_mess:
            raise InputError(
                "--spec names the whole folder dataset; do not also give --dataset/--raw/--from-mess"
            )
        from mopeft.data.folder.spec import PREPARER
        from mopeft.io import read_json

        # By name, like a registered dataset's module: the DAG ties folder.py to folder datasets only.
        print(importlib.import_module(PREPARER).prepare_folder(read_json(args.spec), args.out))
        return 0
    if not (args.dataset and (args.raw or args.from_mess)):
        raise InputError(
            "give --dataset KEY --raw DIR (a registered dataset) or --spec FILE (a folder dataset)"
        )
    if args.tile_size < 1:
        raise InputError("--tile-size must be positive")
    options = PrepareOptions(tile_size=args.tile_size, test_images=args.test_images)
    if args.from_mess:
        # The test images are then MESS's own files, whatever --test-images says.
        importer = importlib.import_module(MESS_IMPORTER)
        print(importer.prepare_from_mess(args.dataset, args.raw, args.from_mess, args.out, options))
        return 0
    target = prepare_dataset(args.dataset, args.raw, args.out, options)
    print(target)
    return 0
