"""Build a SemanticSAM for (arch, K, method), optionally from SAM weights; (de)serialise its trainable part.

Order matters: the official weights are loaded into the STOCK SAM modules (strict, after resizing
pos_embed / global rel-pos for the requested image size), then the semantic decoder is derived, then
the method installs its modules; so a training checkpoint only needs the trainable tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mopeft.methods import get_method
from mopeft.model.arch import build_sam_parts, get_arch
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.model.weights import load_checkpoint, resize_state_dict
from mopeft.peft.prefix import DeepPrompt


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
        holder = nn.ModuleDict({"image_encoder": encoder, "prompt_encoder": prompt, "mask_decoder": decoder})
        state = resize_state_dict(
            state, holder.state_dict(), spec.global_attn_indexes, source=str(checkpoint)
        )
        missing, unexpected = holder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{checkpoint}: not a SAM {arch} checkpoint (missing {missing[:5]}, "
                f"unexpected {unexpected[:5]})"
            )
    with torch.device(device or "cpu"):
        model = SemanticSAM(encoder, prompt, decoder, num_classes, arch=arch, image_size=size)
        get_method(method).apply(model, method_options)
    return model


def _peft_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    # Buffers that PEFT modules need at inference (folded prefix tokens); SAM's own buffers are rebuilt.
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "param_role"):
            for bname, buf in module.named_buffers(prefix=name):
                out[bname] = buf
    return out


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only tensors with requires_grad, plus PEFT buffers; detached CPU copies."""
    out = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
    out.update({name: b.detach().cpu().clone() for name, b in _peft_buffers(model).items()})
    return out


def load_trainable_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load trainable tensors; an unknown or missing key or a wrong shape is an error naming ``source``."""
    if any(k.endswith(".folded_tokens") for k in state):
        for module in model.modules():  # a folded checkpoint goes into a folded-shaped model
            if isinstance(module, DeepPrompt):
                module.prepare_folded()
    targets = dict(model.named_parameters())
    targets.update(_peft_buffers(model))
    unknown = sorted(set(state) - set(targets))
    if unknown:
        raise ValueError(f"{source}: unknown keys for this model ({model.method}): {unknown[:5]}")
    expected = {n for n, p in model.named_parameters() if p.requires_grad} | set(_peft_buffers(model))
    missing = sorted(expected - set(state))
    if missing:  # they would silently keep their fresh (untrained) initial values
        raise ValueError(
            f"{source}: missing trainable tensors for this model ({model.method}): {missing[:5]}"
        )
    with torch.no_grad():
        for key, value in state.items():
            if targets[key].shape != value.shape:
                raise ValueError(
                    f"{source}: {key} has shape {tuple(value.shape)}, "
                    f"model expects {tuple(targets[key].shape)}"
                )
            targets[key].copy_(value)


def fold_prefixes(model: nn.Module) -> int:
    """Fold every reparametrised prefix into plain tokens; returns how many were folded."""
    folded = 0
    for module in model.modules():
        if isinstance(module, DeepPrompt) and module.reparam is not None:
            module.fold()
            folded += 1
    return folded
