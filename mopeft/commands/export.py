"""mopeft export: a trained model in a format other tools read.

``--format peft`` (plain ``lora`` models): an HF ``peft`` LoRA adapter of segment-anything's image
encoder, which ``peft.PeftModel.from_pretrained(ImageEncoderViT(...), OUT)`` loads; the trained mask
decoder and class tokens, which no encoder adapter holds, go beside it (mopeft_decoder.safetensors).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "write a trained lora model as an HF peft adapter of SAM's image encoder (OUT/adapter_model."
    "safetensors + adapter_config.json; the trained mask decoder and class tokens, which are not part of "
    "it, beside it in mopeft_decoder.safetensors)"
)
FORMATS = ("peft",)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", type=Path, help="model.safetensors (or an older model.pt) from mopeft train")
    p.add_argument("--format", required=True, choices=FORMATS, help="peft: an HF peft LoRA adapter")
    p.add_argument("--out", required=True, type=Path, help="folder for the adapter's files (created)")


def run(args: argparse.Namespace) -> int:
    from mopeft.methods.export_peft import export_peft

    written = export_peft(args.model, args.out)
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")
    return 0
