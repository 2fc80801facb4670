"""Low-rank updates of the query and value projections of SAM's fused ``qkv`` layer.

Why separate from the fused Linear: the module only returns the deltas (s B_q A_q h, s B_v A_v h);
the block adds them out of place and chooses the multiplier s (fixed alpha/r, or a learned gate in
MoPEFT that REPLACES alpha/r, as in UniPELT). Key projections stay untouched.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mopeft.errors import InputError


class LoRAQV(nn.Module):
    """Per block: A_q, A_v (r x C, Kaiming-uniform a=sqrt(5)); B_q, B_v (C x r, zero). 4rC params."""

    param_role = "lora"

    def __init__(self, dim: int, r: int, alpha: float | None = None) -> None:
        super().__init__()
        if r <= 0:
            raise InputError(f"LoRA rank must be positive, got {r}")
        self.r = r
        self.alpha = float(r if alpha is None else alpha)
        self.scaling = self.alpha / r
        self.a_q = nn.Linear(dim, r, bias=False)
        self.b_q = nn.Linear(r, dim, bias=False)
        self.a_v = nn.Linear(dim, r, bias=False)
        self.b_v = nn.Linear(r, dim, bias=False)
        for a, b in ((self.a_q, self.b_q), (self.a_v, self.b_v)):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
            nn.init.zeros_(b.weight)

    def forward(
        self,
        h: torch.Tensor,
        scale_q: torch.Tensor | float | None = None,
        scale_v: torch.Tensor | float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """h (..., C) -> (scale_q * B_q A_q h, scale_v * B_v A_v h), each (..., C); the default
        scale is alpha/r. A scale tensor broadcasts against (..., r), e.g. one MoPEFT gate per row.

        A_q and A_v are applied as one (2r x C) projection, so the tokens are read once, and the
        scale multiplies the r-wide intermediate rather than the C-wide delta (same product)."""
        a = nn.functional.linear(h, torch.cat([self.a_q.weight, self.a_v.weight]))
        a_q, a_v = a.split(self.r, dim=-1)
        a_q = a_q * (self.scaling if scale_q is None else scale_q)
        a_v = a_v * (self.scaling if scale_v is None else scale_v)
        return self.b_q(a_q), self.b_v(a_v)
