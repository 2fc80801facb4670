"""Measure what bf16 storage of cached image embeddings would change (CPU, tiny SAM).

The encoder cache keeps fp32 embeddings (exact: cache on/off train the same bits). bf16 entries
would halve its memory; this script says what that costs in numerics, so that `--cache-dtype bf16`
stays an informed opt-in:

1. logits: the decoder's output for fp32 vs bf16-rounded embeddings (random-init and packaged
   pretrained tiny SAM, random and dataset images): max abs / relative difference, argmax agreement;
2. short trained cells (optional, ``--train``): `mopeft miniature` + `prepare` + `train` +
   `evaluate` of decoder_ft and baseline on demo datasets, with --cache-dtype fp32 vs bf16 (the demo's
   optimiser settings); mIoU and weight difference per seed.

    .venv/bin/python scripts/bench_encoder_cache.py [--train] [--datasets floodnet ...] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from mopeft.cli import main as cli
from mopeft.data.loading.loader import SegmentationPairs
from mopeft.data.loading.preprocess import preprocess_image
from mopeft.data.prepared.units import load_unit
from mopeft.methods.build import build_model
from mopeft.methods.checkpoint import read_checkpoint
from mopeft.model.weights import TINY_ASSET, TINY_SHA256

SIZE = 96


def logit_differences(images: torch.Tensor, num_classes: int, pretrained: bool) -> dict:
    """Decoder logits from fp32 embeddings vs the same embeddings rounded to bf16 (CPU, fp32 maths)."""
    ckpt = (TINY_ASSET, TINY_SHA256) if pretrained else (None, None)
    torch.manual_seed(0)
    model = build_model("tiny", num_classes, "decoder_ft", None, SIZE, *ckpt).eval()
    with torch.no_grad():
        emb = model.encode(images)
        rounded = emb.to(torch.bfloat16).float()
        ref, _ = model.decode_with_tokens(emb)
        got, _ = model.decode_with_tokens(rounded)
    diff = (ref - got).abs()
    return {
        "pretrained": pretrained,
        "images": len(images),
        "embedding_max_rel_err": ((emb - rounded).abs().max() / emb.abs().max()).item(),
        "logit_max_abs_diff": diff.max().item(),
        "logit_max_abs": ref.abs().max().item(),
        "logit_max_rel_diff": (diff.max() / ref.abs().max()).item(),
        "logit_mean_abs_diff": diff.mean().item(),
        "argmax_agreement": (ref.argmax(1) == got.argmax(1)).float().mean().item(),
    }


def dataset_images(prepared: Path, count: int = 8) -> torch.Tensor:
    pairs = SegmentationPairs(load_unit(prepared, "main").test, SIZE)
    return torch.stack(
        [preprocess_image(pairs.load_raw(i)[0], SIZE)[0] for i in range(min(count, len(pairs)))]
    )


def prepare(work: Path, dataset: str) -> Path:
    assert cli(["miniature", "--dataset", dataset, "--out", str(work / "raw" / dataset)]) == 0
    assert (
        cli(["prepare", "--dataset", dataset, "--raw", str(work / "raw" / dataset), "--out", str(work)]) == 0
    )
    return work / dataset


def trained_cell(prepared: Path, work: Path, method: str, dtype: str, steps: int, seed: int) -> dict:
    out = work / f"{prepared.name}-{method}-{dtype}-{seed}"
    args = [
        "train", "--data", str(prepared), "--method", method, "--steps", str(steps), "--arch", "tiny",
        "--image-size", str(SIZE), "--batch-size", "4", "--lr", "1e-3", "--weight-decay", "1e-4",
        "--checkpoint", str(TINY_ASSET), "--checkpoint-sha256", TINY_SHA256, "--workers", "0",
        "--cache-dtype", dtype, "--seed", str(seed), "--out", str(out),
    ]  # fmt: skip
    assert cli(args) == 0
    model = str(out / "model.safetensors")
    assert cli(["evaluate", "--model", model, "--data", str(prepared), "--out", str(out / "e")]) == 0
    metrics = json.loads((out / "e" / "metrics.json").read_text())
    log = json.loads((out / "train_log.json").read_text())
    weights = read_checkpoint(out / "model.safetensors")["trainable"]
    return {"miou": metrics["miou"], "final_loss": log["losses"][-1], "weights": weights}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", nargs="+", default=["kvasir_instrument", "floodnet", "deepcrack"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--train", action="store_true", help="also train and evaluate cells (a few minutes)")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepared = {d: prepare(work, d) for d in args.datasets}
        first = prepared[args.datasets[0]]
        k = load_unit(first, "main").num_classes
        generator = torch.Generator().manual_seed(0)
        inputs = {
            "random": torch.randn(8, 3, SIZE, SIZE, generator=generator),
            "dataset": dataset_images(first),
        }
        for name, images in inputs.items():
            for pretrained in (False, True):
                print(json.dumps({"input": name, **logit_differences(images, k, pretrained)}))
        if not args.train:
            return
        for dataset, folder in prepared.items():
            for method in ("decoder_ft", "baseline"):
                for seed in args.seeds:
                    cells = {
                        d: trained_cell(folder, work, method, d, args.steps, seed) for d in ("fp32", "bf16")
                    }
                    a, b = cells["fp32"]["weights"], cells["bf16"]["weights"]
                    row = {
                        "dataset": dataset,
                        "method": method,
                        "seed": seed,
                        "steps": args.steps,
                        "train_images": len(load_unit(folder, "main").train),
                        "test_images": len(load_unit(folder, "main").test),
                        "miou_fp32": round(cells["fp32"]["miou"], 3),
                        "miou_bf16": round(cells["bf16"]["miou"], 3),
                        "final_loss_fp32": cells["fp32"]["final_loss"],
                        "final_loss_bf16": cells["bf16"]["final_loss"],
                        "weight_max_abs_diff": max((a[n] - b[n]).abs().max().item() for n in a),
                    }
                    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
