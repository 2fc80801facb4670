"""UniPELT gate: one Linear(C, 1), sigmoid per token, mean over tokens -> one value per image.

Why a mean of per-token sigmoids (not a sigmoid of the mean): that is what UniPELT's code does
(docs/methods.md, gates); the value stays in (0, 1) and is ~0.5 at init (weight N(0, 0.02), bias 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TokenMeanGate(nn.Module):
    param_role = "gate"

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, 1)
        nn.init.normal_(self.linear.weight, std=0.02)
        nn.init.zeros_(self.linear.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, ..., C) -> gate (B,), averaged over every token axis."""
        return gate_values([self], tokens)[0]


def gate_values(gates: Sequence[TokenMeanGate], tokens: torch.Tensor) -> list[torch.Tensor]:
    """Each gate's value (B,) for the same tokens, from ONE projection to len(gates) outputs.

    Why: MoPEFT's three attention-side gates read the same norm1(x); separate C-to-1 projections
    would read (and, under bf16, convert to fp32) the full token tensor once per gate. Stacking
    the weights keeps each gate its own parameters (gradients flow through the concatenation).
    Computed in the weights' precision (fp32) even under bf16 autocast: the projection costs little,
    and bf16's ~3 significant digits would blur the recorded gate values (Fig. 4.2)."""
    weight = torch.cat([g.linear.weight for g in gates])
    bias = torch.cat([g.linear.bias for g in gates])
    with torch.autocast(tokens.device.type, enabled=False):
        g = torch.sigmoid(nn.functional.linear(tokens.to(weight.dtype), weight, bias))
    g = g.reshape(g.shape[0], -1, len(gates)).mean(dim=1)
    return list(g.unbind(dim=1))
