"""mopeft evaluate: score a trained model on a unit's test split (MESS protocol) and record gates."""

from __future__ import annotations

import argparse
from pathlib import Path

from mopeft.evaluation.evaluate import evaluate_unit
from mopeft.train.checkpoint import load_model, read_checkpoint, weights_label

HELP = "evaluate a trained model: OUT/metrics.json, confusion.npy, gates.npz"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="model.pt written by mopeft train")
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder")
    p.add_argument("--unit", default=None, help="default: the unit the model was trained on")
    p.add_argument("--kfold", type=int, default=2)
    p.add_argument("--weights", type=Path, default=None, help="SAM weights, if moved since training")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, type=Path)


def run(args: argparse.Namespace) -> int:
    payload = read_checkpoint(args.model)
    cfg, train = payload["config"], payload.get("train", {})
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
    evaluate_unit(
        model, args.data, args.unit or train.get("unit", "main"), args.out, args.kfold, args.device, context
    )
    return 0
