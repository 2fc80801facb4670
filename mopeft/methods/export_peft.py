"""A plain ``lora`` model as an HF ``peft`` LoRA adapter of segment-anything's image encoder.

Why this maps exactly: here every block adds ``(alpha/r) B_q A_q h`` to q and ``(alpha/r) B_v A_v h``
to v of the fused ``qkv`` Linear, where ``h`` is that Linear's own input (norm1 of the tokens),
without dropout or bias (:mod:`mopeft.peft.lora`, :class:`mopeft.peft.block.PEFTBlock`). peft's
LoRA on ``qkv`` adds ``(lora_alpha/R) B A h`` to the whole (3C) output. With R = 2r,
A = [A_q; A_v] (2r x C) and B (3C x 2r) holding B_q in the q rows x first r columns, B_v in the v
rows x last r columns and zeros elsewhere (the k rows included), B A h = [B_q A_q h; 0; B_v A_v h],
and lora_alpha = 2 alpha gives the same scale alpha/r. So the encoder with the adapter is the
trained encoder, to rounding.

The method also trains the mask decoder and its class tokens (and a FAIR-1M presence head): they
are not part of an encoder adapter, and go beside it in ``mopeft_decoder.safetensors``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from mopeft import __version__
from mopeft.errors import InputError
from mopeft.io import write_json
from mopeft.methods.checkpoint import read_checkpoint
from mopeft.torch_files import save_safetensors

EXPORTABLE = ("lora",)  # methods whose encoder part is exactly a peft LoRA adapter
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DECODER_FILE = "mopeft_decoder.safetensors"
DECODER_FORMAT = "mopeft-decoder-v1"
TARGET = "qkv"  # segment_anything.modeling.image_encoder.Attention.qkv
_LORA_KEY = re.compile(r"image_encoder\.blocks\.(\d+)\.lora\.(a_q|b_q|a_v|b_v)\.weight")


def _number(x: float) -> int | float:
    """An integral float as an int, as a person would write lora_alpha."""
    return int(x) if float(x).is_integer() else float(x)


def adapter_config(r: int, alpha: float) -> dict[str, Any]:
    """``adapter_config.json`` for a rank-2r LoRA on ``qkv``: the values ``peft``'s own
    ``save_pretrained`` writes for ``LoraConfig(r=2r, lora_alpha=2*alpha, target_modules=["qkv"])``
    on an ``ImageEncoderViT``. Options peft added later are left out, so that they take their
    defaults in whichever peft version loads it."""
    return {
        "alpha_pattern": {},
        "auto_mapping": {
            "base_model_class": "ImageEncoderViT",
            "parent_library": "segment_anything.modeling.image_encoder",
        },
        "base_model_name_or_path": None,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layers_pattern": None,
        "layers_to_transform": None,
        "lora_alpha": _number(2 * alpha),
        "lora_dropout": 0.0,
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": 2 * r,
        "rank_pattern": {},
        "revision": None,
        "target_modules": [TARGET],
        "task_type": None,
        "use_dora": False,
        "use_rslora": False,
    }


def peft_lora_tensors(trainable: dict[str, torch.Tensor], r: int, source: str) -> dict[str, torch.Tensor]:
    """peft's ``lora_A`` / ``lora_B`` of every block from this project's A_q, B_q, A_v, B_v (see the
    module docstring), under the names ``PeftModel.save_pretrained`` gives them."""
    blocks: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in trainable.items():
        if key.startswith("image_encoder."):
            match = _LORA_KEY.fullmatch(key)
            if match is None:
                raise InputError(
                    f"{source}: encoder tensor {key} is not part of a plain LoRA; only plain "
                    f"{', '.join(EXPORTABLE)} models can be exported to peft"
                )
            blocks.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise InputError(f"{source}: no LoRA tensors for blocks 0..N-1 in this model; it cannot be exported")
    out = {}
    for i in sorted(blocks):
        parts = blocks[i]
        if set(parts) != {"a_q", "b_q", "a_v", "b_v"}:
            raise InputError(
                f"{source}: block {i} lacks LoRA tensors {sorted({'a_q', 'b_q', 'a_v', 'b_v'} - set(parts))}"
            )
        a_q, b_q, a_v, b_v = parts["a_q"], parts["b_q"], parts["a_v"], parts["b_v"]
        c = a_q.shape[1]
        if a_q.shape != (r, c) or a_v.shape != (r, c) or b_q.shape != (c, r) or b_v.shape != (c, r):
            raise InputError(f"{source}: block {i}'s LoRA tensors do not have rank {r} (its config's r)")
        b = torch.zeros(3 * c, 2 * r, dtype=b_q.dtype)
        b[:c, :r] = b_q  # q rows, first r columns
        b[2 * c :, r:] = b_v  # v rows, last r columns; the k rows stay zero
        name = f"base_model.model.blocks.{i}.attn.{TARGET}"
        out[f"{name}.lora_A.weight"] = torch.cat([a_q, a_v]).contiguous()
        out[f"{name}.lora_B.weight"] = b
    return out


def export_peft(model_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write the peft adapter (weights + config) and the decoder file into ``out_dir``; returns the
    paths written. Each file is written atomically; other files in ``out_dir`` are left alone."""
    payload = read_checkpoint(model_path)
    cfg = payload["config"]
    if cfg.get("method") not in EXPORTABLE:
        raise InputError(
            f"{model_path}: method {cfg.get('method')!r} has no peft form; exportable: "
            f"{', '.join(EXPORTABLE)} (plain LoRA on q and v)"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: not a folder; pass --out a folder for the adapter's files")
    options = cfg.get("method_options") or {}
    r = int(options["r"])
    alpha = float(r if options.get("alpha") is None else options["alpha"])  # as LoRAQV resolves it
    trainable = payload["trainable"]
    adapter = peft_lora_tensors(trainable, r, str(model_path))
    about = json.dumps(cfg)
    save_safetensors(
        out / ADAPTER_WEIGHTS,
        adapter,
        {"format": "pt", "mopeft_version": __version__, "mopeft_config": about},
    )
    write_json(out / ADAPTER_CONFIG, adapter_config(r, alpha))
    rest = {k: v for k, v in trainable.items() if not k.startswith("image_encoder.")}
    save_safetensors(
        out / DECODER_FILE,
        rest,
        {
            "format": DECODER_FORMAT,
            "mopeft_version": __version__,
            "content": (
                "the trained mask decoder, class tokens (and presence head) of a mopeft SemanticSAM "
                f"model, under mopeft's parameter names; the encoder's LoRA is in {ADAPTER_WEIGHTS}"
            ),
            "config": about,
        },
    )
    return [out / ADAPTER_WEIGHTS, out / ADAPTER_CONFIG, out / DECODER_FILE]
