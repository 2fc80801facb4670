"""``mopeft score``: MESS mIoU of prediction PNGs against label PNGs (no torch needed)."""

from __future__ import annotations

import argparse
import json

from mopeft.errors import InputError

HELP = "score prediction PNGs (class ids) against label PNGs with the MESS mIoU protocol"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, help="folder of prediction PNGs (class ids 0..K-1)")
    parser.add_argument("--gt", required=True, help="folder of label PNGs with the same stems (255 = ignore)")
    parser.add_argument("--num-classes", type=int, required=True, help="number of classes K")
    parser.add_argument("--ignore-index", type=int, default=255, help="label value to ignore (default 255)")
    parser.add_argument("--out", help="also write the JSON here (atomically)")
    parser.add_argument("--confusion", help="also write the (K+1)x(K+1) confusion matrix here (.npy)")
    parser.add_argument(
        "--per-image",
        help="also write the per-image tp/fp/fn counts here (.npz, the format of `mopeft evaluate`)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="add a percentile bootstrap interval of the mIoU over images from N resamples "
        "(e.g. 1000; default 0 = none) under the key 'bootstrap'",
    )
    parser.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws (default 0)")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from mopeft.evaluation.bootstrap import cell_interval, run_from_arrays
    from mopeft.evaluation.score import score_folders
    from mopeft.io import atomic_path, write_json

    if args.bootstrap < 0 or args.bootstrap == 1:
        raise InputError(f"--bootstrap must be 0 (none) or at least 2 resamples, got {args.bootstrap}")
    result, cm, (names, counts) = score_folders(args.pred, args.gt, args.num_classes, args.ignore_index)
    if args.bootstrap:
        run_counts = run_from_arrays(names, counts, args.gt)
        result["bootstrap"] = cell_interval([run_counts], args.bootstrap, args.confidence, args.seed)
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.out:
        write_json(args.out, result)
    if args.confusion:
        cm.save(args.confusion)
    if args.per_image:
        with atomic_path(args.per_image, suffix=".npz.tmp") as tmp, open(tmp, "wb") as f:
            np.savez(f, images=names, counts=counts)
    return 0
