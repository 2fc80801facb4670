"""Shallow VPT for SAM's windowed encoder (the treatment of the VPT authors' code
for windowed backbones, docs/methods.md).

Shallow prompts enter at the first block and then PROPAGATE, so unlike deep prompts they need real
query rows: in each block the L prompt tokens are replicated into every window, the rel-pos bias is
zero for prompt rows and columns, prompt outputs are averaged over the windows of their image, the
MLP is applied to them too, no pos_embed is added to them, and they are dropped before the neck.
The encoder re-uses the wrapped encoder's submodules under the same names, so state-dict keys
(``image_encoder.blocks.0...``) do not change; only ``image_encoder.prompts`` is new (L x C params).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mopeft.errors import InputError
from mopeft.model.sam_modeling import Block, ImageEncoderViT, window_partition, window_unpartition
from mopeft.peft import attention as attention_ops
from mopeft.peft.block import block_rel_terms


class ShallowPrompts(nn.Module):
    param_role = "shallow_prompt"

    def __init__(self, length: int, dim: int, patch_size: int) -> None:
        super().__init__()
        if length <= 0:
            raise InputError(f"prompt length must be positive, got {length}")
        bound = math.sqrt(6.0 / (3 * patch_size**2 + dim))
        self.tokens = nn.Parameter(torch.empty(length, dim).uniform_(-bound, bound))


def prompted_block(blk: Block, x: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One frozen SAM block over patch tokens x (B,H,W,C) and prompt tokens p (B,L,C)."""
    attn = blk.attn
    b, height, width, c = x.shape
    length = p.shape[1]
    h, hp = blk.norm1(x), blk.norm1(p)
    ws = blk.window_size
    if ws > 0:
        h, pad_hw = window_partition(h, ws)
    bw, gh, gw, _ = h.shape
    n_win = bw // b
    n = gh * gw
    nh = attn.num_heads
    seq = torch.cat([hp.repeat_interleave(n_win, dim=0), h.reshape(bw, n, c)], dim=1)  # (B', L+N, C)
    q, k, v = (t.reshape(bw, length + n, nh, c // nh).transpose(1, 2) for t in attn.qkv(seq).chunk(3, dim=-1))
    # Prompt rows and columns carry no rel-pos bias; the token rows get SAM's bias on token columns.
    rel = block_rel_terms(q[:, :, length:], blk, (gh, gw)) if attn.use_rel_pos else None
    out = attention_ops.attention(q, k, v, rel, (gh, gw), query_prefix=length)
    out = attn.proj(out.transpose(1, 2).reshape(bw, length + n, c))
    out_p = out[:, :length].reshape(b, n_win, length, c).mean(dim=1)
    out_x = out[:, length:].reshape(bw, gh, gw, c)
    if ws > 0:
        out_x = window_unpartition(out_x, ws, pad_hw, (height, width))
    x, p = x + out_x, p + out_p
    return x + blk.mlp(blk.norm2(x)), p + blk.mlp(blk.norm2(p))


class ShallowVPTEncoder(nn.Module):
    def __init__(self, encoder: ImageEncoderViT, length: int) -> None:
        super().__init__()
        self.img_size = encoder.img_size
        self.patch_embed = encoder.patch_embed
        self.pos_embed = encoder.pos_embed
        self.blocks = encoder.blocks
        self.neck = encoder.neck
        patch = encoder.patch_embed.proj.kernel_size[0]
        self.prompts = ShallowPrompts(length, encoder.pos_embed.shape[-1], patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        p = self.prompts.tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        for blk in self.blocks:
            x, p = prompted_block(blk, x, p)
        return self.neck(x.permute(0, 3, 1, 2))
