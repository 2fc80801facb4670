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
import torch.nn.functional as F
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


def presence_targets(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(B,H,W) class-id labels -> (B,K) float targets: 1 where class k has at least one pixel.

    Ignored pixels (255) say nothing about presence, so they are dropped before counting.
    """
    if labels.ndim != 3:
        raise ValueError(f"expected labels (B,H,W), got shape {tuple(labels.shape)}")
    flat = labels.reshape(labels.shape[0], -1).long()
    valid = flat != ignore_index
    if bool(((flat < 0) | (flat >= num_classes))[valid].any()):
        raise ValueError(f"label values outside 0..{num_classes - 1} (and {ignore_index})")
    counts = torch.zeros(labels.shape[0], num_classes + 1, device=labels.device)
    counts.scatter_add_(1, torch.where(valid, flat, num_classes), torch.ones_like(flat, dtype=counts.dtype))
    return (counts[:, :num_classes] > 0).float()


def presence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over images and classes (numerically stable, from logits)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
