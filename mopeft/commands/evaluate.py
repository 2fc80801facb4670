"""mopeft evaluate: score a trained model on a unit's test split (MESS protocol) and record gates."""

from __future__ import annotations

import argparse
from pathlib import Path

from mopeft.device import resolve_device
from mopeft.evaluation.evaluate import evaluate_unit
from mopeft.io import read_json
from mopeft.methods.checkpoint import check_trained_on, load_model, read_checkpoint, weights_label

HELP = "evaluate a trained model: OUT/metrics.json, confusion.npy, gates.npz"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="model.safetensors written by mopeft train (or an older model.pt)",
    )
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--unit", default=None, help="default: the unit the model was trained on")
    p.add_argument("--kfold", type=int, default=2)
    p.add_argument("--weights", type=Path, default=None, help="SAM weights, if moved since training")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, ...")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    p.add_argument(
        "--workers", type=int, default=None, help="loader processes (default: 4 on CUDA, 0 on CPU)"
    )
    p.add_argument(
        "--examples",
        type=int,
        default=0,
        metavar="N",
        help="also save the predictions of N fixed test images to OUT/examples/ (Fig. 4.1)",
    )
    p.add_argument("--out", required=True, type=Path)


def run(args: argparse.Namespace) -> int:
    payload = read_checkpoint(args.model)
    cfg, train = payload["config"], payload.get("train", {})
    meta_path = args.data / "meta.json"
    check_trained_on(cfg, args.model, read_json(meta_path), meta_path)  # before the model is built
    model = load_model(args.model, args.weights)
    context = {
        "method": cfg["method"],
        "method_options": cfg["method_options"],
        "arch": cfg["arch"],
        "image_size": cfg["image_size"],
        "weights": weights_label(cfg),
        "seed": train.get("seed"),
        "train_steps": train.get("steps"),
    }
    workers = (
        args.workers if args.workers is not None else (4 if resolve_device(args.device).type == "cuda" else 0)
    )
    evaluate_unit(
        model,
        args.data,
        args.unit or train.get("unit", "main"),
        args.out,
        args.kfold,
        args.device,
        context,
        batch_size=args.batch_size,
        workers=workers,
        examples=args.examples,
    )
    return 0
