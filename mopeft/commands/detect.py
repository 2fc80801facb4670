"""``mopeft detect``: Masks2Boxes detections of a trained model over a prepared FAIR-1M split."""

from __future__ import annotations

import argparse
import json

from mopeft.errors import InputError

HELP = "detect oriented boxes with a trained semantic model (Masks2Boxes) and write a detections JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="trained checkpoint (DIR/model.safetensors)")
    parser.add_argument("--data", required=True, help="prepared FAIR-1M folder (with meta.json)")
    parser.add_argument("--split", default="test", choices=("train", "test"), help="split to run on")
    parser.add_argument("--min-size", type=int, default=4, help="smallest component kept, in pixels")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--out", required=True, help="detections JSON (read by score-detections)")


def run(args: argparse.Namespace) -> int:
    from mopeft.evaluation.detect import run_detection

    if args.min_size < 1:
        raise InputError(f"--min-size must be >= 1, got {args.min_size}")
    res = run_detection(args.model, args.data, args.out, args.split, args.min_size, args.device)
    summary = {k: v for k, v in res.items() if k != "detections"}
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0
