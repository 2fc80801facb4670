"""Pfeiffer/UniPELT bottleneck adapter placed after the FFN residual of a pre-LN ViT block.

out = Z + W_up ReLU(W_down Z). W_up (and its bias) start at zero so the wrapped block equals the
frozen SAM block at initialisation, which makes the identity testable.
"""

from __future__ import annotations

import torch
from torch import nn

from mopeft.errors import InputError


class Adapter(nn.Module):
    """Returns the BRANCH only (the block adds residual and, in MoPEFT, the gate). (2C+1)D_mid + C params."""

    param_role = "adapter"

    def __init__(self, dim: int, dmid: int) -> None:
        super().__init__()
        if dmid <= 0:
            raise InputError(f"adapter bottleneck must be positive, got {dmid}")
        self.down = nn.Linear(dim, dmid)
        self.up = nn.Linear(dmid, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.down(z)))
