"""Exact parameter counts per method, split the way the study reports them.

Why roles come from the modules (``param_role`` attribute) and not from name patterns: a PEFT module
declares what it is, so the breakdown cannot silently miss a renamed parameter. The reparametrisation
MLP of the prefix is training-only; the deployed ("folded") count replaces it by L x C per block,
which is the number comparable to the paper's trainable share (docs/methods.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mopeft.methods.build import build_model
from mopeft.model.arch import build_sam_parts, get_arch
from mopeft.peft.prefix import DeepPrompt

ENCODER_PEFT_ROLES = ("lora", "prefix", "adapter", "shallow_prompt")


def parameter_roles(model: nn.Module) -> dict[str, str]:
    """Parameter name -> role: a PEFT role, "decoder", "encoder" (SAM's own) or "prompt_encoder"."""
    roles: dict[str, str] = {}
    for name, _ in model.named_parameters():
        roles[name] = (
            name.split(".", 1)[0].replace("image_encoder", "encoder").replace("mask_decoder", "decoder")
        )
    for name, module in model.named_modules():  # pre-order: inner modules override their parents
        role = getattr(module, "param_role", None)
        if role:
            for pname, _ in module.named_parameters(prefix=name):
                roles[pname] = role
    return roles


def sam_reference_total(arch: str) -> int:
    """Parameters of the stock SAM (with its 4 mask tokens and IoU head), the denominator of "% of SAM"."""
    with torch.device("meta"):
        parts = build_sam_parts(get_arch(arch))
    return sum(p.numel() for part in parts for p in part.parameters())


def count_parameters(model: nn.Module) -> dict[str, Any]:
    roles = parameter_roles(model)
    params = dict(model.named_parameters())
    total = sum(p.numel() for p in params.values())
    trainable = {n: p for n, p in params.items() if p.requires_grad}

    def tsum(*wanted: str) -> int:
        return sum(p.numel() for n, p in trainable.items() if roles[n] in wanted)

    by_role: dict[str, int] = {}
    for n, p in trainable.items():
        by_role[roles[n]] = by_role.get(roles[n], 0) + p.numel()
    reparam = tsum("reparam")
    # Tokens produced by a reparam MLP, or already folded into a buffer (directly learned tokens are params).
    folded = sum(m.length * m.dim for m in model.modules() if isinstance(m, DeepPrompt) and m.tokens is None)
    encoder_peft = tsum(*ENCODER_PEFT_ROLES) + folded
    trainable_total = sum(p.numel() for p in trainable.values())
    reference = sam_reference_total(model.arch)
    decoder = tsum("decoder")
    return {
        "arch": model.arch,
        "method": model.method,
        "method_options": model.method_options,
        "num_classes": model.num_classes,
        "image_size": model.image_size,
        "total": total,
        "trainable": trainable_total,
        "trainable_by_role": dict(sorted(by_role.items())),
        "encoder_peft": encoder_peft,
        "encoder_peft_training_only_reparam": reparam,
        "prefix_folded": folded,
        "gates": tsum("gate"),
        "decoder_trainable": decoder,
        "class_tokens": model.mask_decoder.class_tokens.weight.numel(),
        "encoder_full": tsum("encoder"),
        "trainable_deployed": trainable_total - reparam + folded,
        "encoder_peft_plus_gates": encoder_peft + tsum("gate"),
        "sam_reference_total": reference,
        "encoder_peft_pct_of_sam": 100.0 * encoder_peft / reference,
        "encoder_peft_plus_gates_pct_of_sam": 100.0 * (encoder_peft + tsum("gate")) / reference,
    }


def method_parameter_counts(
    arch: str, method: str, options: dict | None = None, num_classes: int = 2, image_size: int | None = None
) -> dict[str, Any]:
    """Counts without weights: the model is built on the meta device (no memory, no init cost)."""
    model = build_model(arch, num_classes, method, options, image_size=image_size, device="meta")
    return count_parameters(model)
