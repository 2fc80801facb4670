"""Build a SemanticSAM for (arch, K, method), optionally from SAM weights: where model, PEFT modules
and methods meet (so neither ``model`` nor ``peft`` has to know the methods).

Order matters: the official weights are loaded into the STOCK SAM modules (strict, after resizing
pos_embed / global rel-pos for the requested image size), then the semantic decoder is derived, then
the method installs its modules; so a training checkpoint only needs the trainable tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mopeft.errors import InputError
from mopeft.methods import get_method
from mopeft.model.arch import build_sam_parts, get_arch
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.model.weights import load_checkpoint, resize_state_dict


def build_model(
    arch: str,
    num_classes: int,
    method: str,
    method_options: dict | None = None,
    image_size: int | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_sha256: str | None = None,
    device: str | torch.device | None = None,
) -> SemanticSAM:
    """``device="meta"`` builds shapes only (parameter counting without memory or weights)."""
    spec = get_arch(arch)
    size = image_size or spec.default_image_size
    with torch.device(device or "cpu"):
        encoder, prompt, decoder = build_sam_parts(spec, size)
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, checkpoint_sha256)
        parts = {"image_encoder": encoder, "prompt_encoder": prompt, "mask_decoder": decoder}
        holder = torch.nn.ModuleDict(parts)
        state = resize_state_dict(
            state, holder.state_dict(), spec.global_attn_indexes, source=str(checkpoint)
        )
        missing, unexpected = holder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(
                f"{checkpoint}: not a SAM {arch} checkpoint (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
    with torch.device(device or "cpu"):
        model = SemanticSAM(encoder, prompt, decoder, num_classes, arch=arch, image_size=size)
        get_method(method).apply(model, method_options)
    return model
