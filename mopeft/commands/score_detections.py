"""``mopeft score-detections``: DOTA-style mAP@0.5 of oriented detections against FAIR-1M XMLs."""

from __future__ import annotations

import argparse
import json

from mopeft.errors import InputError

HELP = "score oriented detections (JSON) against FAIR-1M XML files: per-class AP, category means, mAP"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pred",
        required=True,
        help='JSON list of {"image": stem, "class": name, "score": float, "poly": [x1,y1,...,x4,y4]}',
    )
    parser.add_argument("--gt", required=True, help="folder of FAIR-1M XML files, one per image stem")
    parser.add_argument("--iou", type=float, default=0.5, help="oriented IoU threshold (default 0.5)")
    parser.add_argument("--method", help="method name recorded in the output (for Table A.1)")
    parser.add_argument("--out", help="also write the JSON here (atomically)")


def run(args: argparse.Namespace) -> int:
    from mopeft.detection.ap import score_detections
    from mopeft.io import read_json, write_json

    if not 0.0 < args.iou <= 1.0:
        raise InputError(f"--iou must be in (0, 1], got {args.iou}")
    result = score_detections(args.pred, args.gt, args.iou)
    # Carry the provenance `mopeft detect` recorded (base weights, synthetic data, environment) into
    # the AP file: Table A.1 reads only these files and must say when its numbers come from a demo.
    pred = read_json(args.pred)
    if isinstance(pred, dict):
        result |= {k: pred[k] for k in ("weights", "synthetic", "environment") if k in pred}
    if args.method:
        result["method"] = args.method
    print(json.dumps(result, indent=2, sort_keys=True))
    if args.out:
        write_json(args.out, result)
    return 0
