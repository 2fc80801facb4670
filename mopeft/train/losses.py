"""Segmentation loss: cross-entropy (ignore 255) + soft Dice, as in SAMed (weights configurable).

The loss is computed on the decoder's low-resolution logits against the nearest-downsampled label
(SAMed's choice): upsampling K logit maps to 1024² for every step would cost far more memory than
the model itself for datasets with many classes (CUB-200: 201 classes).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (B,H,W) integer labels (255 stays 255)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Soft Dice per class (background included), ignoring 255 pixels, averaged over all K classes
    as SAMed does (an absent class with no predicted mass scores dice 1 thanks to ``eps``)."""
    probs = logits.float().softmax(dim=1)
    valid = (labels != IGNORE_INDEX).unsqueeze(1)
    target = F.one_hot(labels.clamp(max=logits.shape[1] - 1) * (labels != IGNORE_INDEX), logits.shape[1])
    target = target.permute(0, 3, 1, 2).float() * valid
    probs = probs * valid
    inter = (probs * target).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice.mean()


def segmentation_loss(
    logits: torch.Tensor, labels: torch.Tensor, ce_weight: float = 0.2, dice_weight: float = 0.8
) -> torch.Tensor:
    """ce_weight·CE + dice_weight·Dice on logits (B,K,h,w) vs labels (B,H,W) resized to (h,w).

    A batch whose pixels are all ignored gives loss 0 and zero gradients: CE is a sum over the
    labelled pixels divided by their count clamped to 1, so no step asks the device whether the
    batch is empty (a host-device sync per step) and none divides by zero.
    """
    labels = downsample_labels(labels.long(), tuple(logits.shape[-2:]))
    labelled = (labels != IGNORE_INDEX).sum().clamp_min(1)
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
    return ce_weight * ce + dice_weight * dice_loss(logits, labels)
