"""``mopeft score``: MESS mIoU of prediction PNGs against label PNGs (no torch needed)."""

from __future__ import annotations

import argparse
import json

HELP = "score prediction PNGs (class ids) against label PNGs with the MESS mIoU protocol"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of prediction PNGs (class ids 0..K-1)")
    parser.add_argument("--gt", required=True, help="folder of label PNGs with the same stems (255 = ignore)")
    parser.add_argument("--num-classes", type=int, required=True, help="number of classes K")
    parser.add_argument("--ignore-index", type=int, default=255, help="label value to ignore (default 255)")
    parser.add_argument("--out", help="also write the JSON here (atomically)")
    parser.add_argument("--confusion", help="also write the (K+1)x(K+1) confusion matrix here (.npy)")


def run(args: argparse.Namespace) -> int:
    from mopeft.evaluation.score import score_folders
    from mopeft.io import write_json

    result, cm = score_folders(args.pred, args.gt, args.num_classes, args.ignore_index)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.out:
        write_json(args.out, result)
    if args.confusion:
        cm.save(args.confusion)
    return 0
