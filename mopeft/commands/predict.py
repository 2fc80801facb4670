"""``mopeft predict``: a trained cell's model applied to any folder of images.

Writes one class-id PNG per image (single channel, the image's stem, its original size), the
input ``mopeft score`` reads; ``--overlay`` adds colour overlays in ``OUT/overlay/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mopeft.errors import InputError

HELP = "apply a trained model to a folder of images: OUT/<stem>.png class ids (+ --overlay colour overlays)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, type=Path, help="CELL/units/<unit>/model.safetensors from mopeft train"
    )
    p.add_argument("--images", required=True, type=Path, help="folder of images (png, jpg, tif, bmp)")
    p.add_argument("--out", required=True, type=Path, help="output folder of class-id PNGs")
    p.add_argument("--overlay", action="store_true", help="also write colour overlays to OUT/overlay/")
    p.add_argument("--weights", type=Path, default=None, help="SAM weights, if moved since training")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument(
        "--workers", type=int, default=None, help="loader processes (default: 4 on CUDA, 0 on CPU)"
    )


def run(args: argparse.Namespace) -> int:
    from mopeft.device import resolve_device
    from mopeft.evaluation.predict import predict_folder, summary_line
    from mopeft.methods.checkpoint import load_model, read_checkpoint

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    cfg = read_checkpoint(args.model)["config"]
    model = load_model(args.model, args.weights)
    device = resolve_device(args.device)
    workers = args.workers if args.workers is not None else (4 if device.type == "cuda" else 0)
    context = {"model": str(args.model), "method": cfg["method"], "classes": cfg.get("classes")}
    summary = predict_folder(
        model, args.images, args.out, device, args.batch_size, workers, args.overlay, context
    )
    print(summary_line(summary, args.out, args.overlay))
    return 0
