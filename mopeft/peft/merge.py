"""Merge LoRA into the frozen ``qkv`` weights, for deployment and for timing the deployed model.

Why: an unmerged LoRA block runs two extra small matmuls per projection at inference; merged, it
costs exactly what the base model costs (Table 4.5 reports both timings, docs/performance.md).
LoRA's update of the fused qkv layer is linear, ``q += s·B_q A_q h`` and ``v += s·B_v A_v h``
(s = alpha / r), so it folds into the q rows [0, C) and the v rows [2C, 3C) of ``qkv.weight``.

MoPEFT's gated LoRA cannot be merged: its multiplier G(x) is computed from each image's tokens, so
the update is not one fixed matrix. ``merge_lora`` refuses such a model instead of dropping the gate.
"""

from __future__ import annotations

import torch
from torch import nn

from mopeft.peft.block import PEFTBlock

_LORA_GATES = ("lora_q", "lora_v")


def merge_lora(model: nn.Module) -> int:
    """Fold every non-gated LoRA of ``model`` into its block's qkv weight and drop the LoRA module.

    Works in place and returns the number of blocks merged (0 when the model has no LoRA). The merged
    weight is a NEW parameter: a copy of the model that shares frozen weights with ``model`` (as
    ``mopeft bench``'s deployed copies do) is left untouched. Raises ``ValueError`` for gated LoRA.
    """
    blocks = [m for m in model.modules() if isinstance(m, PEFTBlock) and m.lora is not None]
    gated = [b for b in blocks if any(g in b.gates for g in _LORA_GATES)]
    if gated:
        raise ValueError(
            f"{len(gated)} block(s) have gated LoRA (MoPEFT): the gate is computed from each input, "
            "so the update is no fixed matrix and cannot be merged into qkv"
        )
    for blk in blocks:
        lora, qkv = blk.lora, blk.block.attn.qkv
        c = qkv.in_features
        if qkv.out_features != 3 * c:
            raise ValueError(f"qkv has {qkv.out_features} outputs, expected 3 x {c} (rows [q; k; v])")
        with torch.no_grad():
            weight = qkv.weight.detach().clone()
            delta_q = lora.b_q.weight.to(weight.dtype) @ lora.a_q.weight.to(weight.dtype)
            delta_v = lora.b_v.weight.to(weight.dtype) @ lora.a_v.weight.to(weight.dtype)
            weight[:c] += lora.scaling * delta_q
            weight[2 * c :] += lora.scaling * delta_v
        qkv.weight = nn.Parameter(weight, requires_grad=qkv.weight.requires_grad)
        blk.lora = None
    return len(blocks)
