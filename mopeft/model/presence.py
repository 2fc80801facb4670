"""The class MLP of Appendix A: image-level class presence from the decoder's class tokens.

The thesis adds an MLP to the mask decoder "to predict the class along with the bounding box"
(after Cheng et al.'s mask classification). In our semantic SAM every class already has its own
output token, so the MLP reads each class token and predicts whether that class occurs in the image;
Masks2Boxes multiplies a component's mean mask probability by this presence probability, which
suppresses confident-looking blobs of classes the image does not contain. One weight set is
shared by all classes (the tokens differ, the question asked of them is the same).
"""

from __future__ import annotations

import torch
from torch import nn


class ClassPresenceMLP(nn.Module):
    """(B, K, D) class-token outputs -> (B, K) presence logits."""

    def __init__(self, dim: int, hidden: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError("num_layers must be >= 1")
        layers: list[nn.Module] = []
        width = dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 3:
            raise ValueError(f"expected class tokens (B,K,D), got shape {tuple(tokens.shape)}")
        return self.mlp(tokens).squeeze(-1)
