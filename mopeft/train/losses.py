"""Segmentation loss: cross-entropy (ignore 255) + soft Dice (SAMed's 0.2 / 0.8 weights).

Resolution (``resolution``):

* ``"full"`` (default): the decoder's S/4 logits are upsampled (bilinear, as evaluation does) to
  the padded input size S and compared with the label at S. A 1–3 px vessel or crack keeps every
  pixel in the target; nearest-downsampling the label to S/4 keeps every 4th row and column, so
  such a line survives only as broken dots, and a model that fitted that target perfectly would
  score ~10 / 24 / 35 % foreground IoU on 1 / 2 / 3 px lines at full resolution. The price is
  memory: K upsampled maps of S² pixels (docs/performance.md gives the figures).
* ``"logits"``: the label nearest-downsampled to the logits (SAMed's choice; cheap, blind to thin
  structures). Kept for comparison and for memory-bound many-class runs.

Dice is averaged over the classes present in the batch's ground truth: over all K classes, an
absent class contributes a constant (its dice is eps / eps = 1 only if no mass is predicted) and
each present class gets only 1/K of the gradient (K = 201: a perfect prediction still scored 0.957).
Mass predicted on absent classes is penalised by the cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
RESOLUTIONS = ("full", "logits")


def downsample_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of (B,H,W) integer labels (255 stays 255)."""
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    return F.interpolate(labels[:, None].float(), size=size, mode="nearest")[:, 0].long()


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """1 - mean soft Dice over the classes present in ``labels`` (ignoring 255 pixels).

    Computed without a one-hot (B, K, H, W) target: the intersection gathers each pixel's
    probability of its own class, the predicted mass is a product with the valid mask, and the
    class counts are scattered; at full resolution for K = 201 that saves two tensors of K × H × W.
    No host sync: the present-class mask stays on the device, and a batch with no labelled pixel
    gives 0 (the mean over zero classes is taken as 0)."""
    k = logits.shape[1]
    probs = logits.float().softmax(dim=1)
    valid = labels != IGNORE_INDEX
    own = torch.where(valid, labels, 0).clamp(max=k - 1)
    weight = valid.float()
    p_own = probs.gather(1, own[:, None])[:, 0] * weight  # (B, H, W): probability of the own class
    inter = torch.zeros(k, device=logits.device).scatter_add_(0, own.flatten(), p_own.flatten())
    target_sum = torch.zeros(k, device=logits.device).scatter_add_(0, own.flatten(), weight.flatten())
    pred_sum = torch.einsum("bkn,bn->k", probs.flatten(2), weight.flatten(1))
    dice = (2 * inter + eps) / (pred_sum + target_sum + eps)
    present = (target_sum > 0).float()
    return ((1 - dice) * present).sum() / present.sum().clamp_min(1)


def loss_target(
    logits: torch.Tensor, labels: torch.Tensor, resolution: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (logits, labels) pair the loss compares, at the chosen resolution."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"loss resolution must be one of {RESOLUTIONS}, got {resolution!r}")
    labels = labels.long()
    if resolution == "full" and tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
        logits = F.interpolate(
            logits.float(), size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=False
        )
        return logits, labels
    return logits, downsample_labels(labels, tuple(logits.shape[-2:]))


def segmentation_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ce_weight: float = 0.2,
    dice_weight: float = 0.8,
    resolution: str = "full",
) -> torch.Tensor:
    """ce_weight·CE + dice_weight·Dice of logits (B,K,h,w) against labels (B,H,W) (see module doc).

    A batch whose pixels are all ignored gives loss 0 and zero gradients: CE is a sum over the
    labelled pixels divided by their count clamped to 1, so no step asks the device whether the
    batch is empty (a host-device sync per step) and none divides by zero.
    """
    logits, labels = loss_target(logits, labels, resolution)
    labelled = (labels != IGNORE_INDEX).sum().clamp_min(1)
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
    return ce_weight * ce + dice_weight * dice_loss(logits, labels)


# --------------------------------------------------------------- class presence (FAIR-1M, Appendix A)
def presence_targets(labels: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """(B,H,W) class-id labels -> (B,K) float targets: 1 where class k has at least one pixel.

    Ignored pixels (255) say nothing about presence, so they are dropped before counting.
    """
    if labels.ndim != 3:
        raise ValueError(f"expected labels (B,H,W), got shape {tuple(labels.shape)}")
    flat = labels.reshape(labels.shape[0], -1).long()
    # No value check here (it would wait for the device every step): labels are checked when read.
    valid = (flat != ignore_index) & (flat < num_classes)
    counts = torch.zeros(labels.shape[0], num_classes + 1, device=labels.device)
    counts.scatter_add_(1, torch.where(valid, flat, num_classes), torch.ones_like(flat, dtype=counts.dtype))
    return (counts[:, :num_classes] > 0).float()


def presence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy over images and classes (numerically stable, from logits)."""
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
