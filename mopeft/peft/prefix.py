"""VPT-Deep tokens used as attention prefixes (docs/methods.md).

A deep prompt P (L x C) only ever acts as keys/values: K_P = W_K LN1(P) + b_K, V_P = W_V LN1(P) + b_V
through the block's FROZEN projections, so it is implemented as a K/V prefix shared by every window.

Training uses a reparametrisation, PER LAYER (each block owns its MLP; no cross-layer sharing):
Embedding(L, C) -> Linear(C, hidden) -> tanh -> Linear(hidden, C). ``fold()`` evaluates it once and
keeps only the L x C tokens (a buffer), which is what inference and the "deployed" parameter count use.
``hidden = 0`` learns the tokens directly (VPT init, uniform +-sqrt(6 / (3 * patch^2 + C))).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mopeft.errors import InputError


class PrefixReparam(nn.Module):
    """Training-only generator of the prefix tokens; counted separately from the folded tokens."""

    param_role = "reparam"

    def __init__(self, length: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(length, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, dim))

    def forward(self) -> torch.Tensor:
        return self.mlp(self.embedding.weight)


class DeepPrompt(nn.Module):
    """L prompt tokens for one block, either reparametrised (training) or plain (direct / folded)."""

    param_role = "prefix"

    def __init__(self, length: int, dim: int, hidden: int = 0, patch_size: int = 16) -> None:
        super().__init__()
        if length <= 0:
            raise InputError(f"prefix length must be positive, got {length}")
        self.length = length
        self.dim = dim
        self.reparam: PrefixReparam | None = None
        self.tokens: nn.Parameter | None = None
        if hidden > 0:
            self.reparam = PrefixReparam(length, dim, hidden)
        else:
            bound = math.sqrt(6.0 / (3 * patch_size**2 + dim))
            self.tokens = nn.Parameter(torch.empty(length, dim).uniform_(-bound, bound))

    @property
    def folded(self) -> bool:
        return self.reparam is None and self.tokens is None

    def forward(self) -> torch.Tensor:
        """The (L, C) prompt tokens."""
        if self.reparam is not None:
            return self.reparam()
        if self.tokens is not None:
            return self.tokens
        return self.folded_tokens

    def fold(self) -> None:
        """Replace the reparametrisation by its output (a persistent buffer); idempotent."""
        if self.reparam is None:
            return
        with torch.no_grad():
            value = self.reparam().detach().clone()
        self.reparam = None
        self.register_buffer("folded_tokens", value)

    def prepare_folded(self) -> None:
        """Make the module folded-shaped (placeholder buffer) so a folded checkpoint can be loaded into it."""
        if self.reparam is not None:
            p = self.reparam.embedding.weight
            self.reparam = None
            self.register_buffer(
                "folded_tokens", torch.zeros(self.length, self.dim, dtype=p.dtype, device=p.device)
            )
