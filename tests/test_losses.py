"""The training objective: thin structures survive the target, Dice over present classes, no syncs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mopeft.train.losses import dice_loss, loss_target, segmentation_loss


def _line_label(size: int = 96, width: int = 1) -> torch.Tensor:
    """(1, S, S): a diagonal and a vertical line of ``width`` px (class 1) on background (class 0)."""
    label = np.zeros((size, size), dtype=np.int64)
    for w in range(width):
        idx = np.arange(size - w)
        label[idx, idx + w] = 1
        label[:, size // 3 + w] = 1
    return torch.from_numpy(label)[None]


def _foreground_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a == 1, b == 1
    return float((a & b).sum() / (a | b).sum())


@pytest.mark.parametrize("width", [1, 2, 3])
def test_a_thin_line_survives_the_full_resolution_target(width):
    """The loss compares against what evaluation scores: the label at full resolution."""
    label = _line_label(96, width)
    logits = torch.zeros(1, 2, 24, 24)  # the decoder's S/4 output
    _, target = loss_target(logits, label, "full")
    assert _foreground_iou(target, label) >= 0.99
    # The old target (nearest-downsampled to S/4), seen at full resolution, loses most of the line.
    _, coarse = loss_target(logits, label, "logits")
    back = F.interpolate(coarse[:, None].float(), size=(96, 96), mode="nearest")[:, 0].long()
    assert _foreground_iou(back, label) < 0.7


def test_full_resolution_logits_are_the_bilinear_upsampling_evaluation_uses():
    logits = torch.randn(2, 3, 8, 8)
    up, _ = loss_target(logits, torch.zeros(2, 32, 32, dtype=torch.long), "full")
    assert torch.allclose(up, F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False))


def test_dice_of_a_perfect_many_class_prediction_is_near_zero():
    """K = 201 (CUB-200): averaging over all classes gave 0.957 for a perfect prediction."""
    k = 201
    labels = torch.randint(0, 5, (2, 32, 32))  # 5 of the 201 classes present
    labels[0, 0, 0] = 255
    logits = F.one_hot(labels.clamp(max=k - 1), k).permute(0, 3, 1, 2).float() * 50.0
    assert dice_loss(logits, labels).item() < 0.01
    all_classes = 1 - (2 * 0 + 1e-5) / (0 + 1e-5)  # an absent class's dice term under the old mean
    assert all_classes == 0.0  # (absent classes contributed 1 - 1 = 0 only with no predicted mass)


def test_dice_is_the_mean_over_present_classes_by_hand():
    labels = torch.tensor([[[0, 0, 1, 1]]])
    probs = torch.tensor([[[[0.9, 0.6, 0.2, 0.1]], [[0.1, 0.4, 0.8, 0.9]], [[0.0, 0.0, 0.0, 0.0]]]])
    logits = probs.clamp_min(1e-12).log()
    d0 = 2 * (0.9 + 0.6) / ((0.9 + 0.6 + 0.2 + 0.1) + 2)
    d1 = 2 * (0.8 + 0.9) / ((0.1 + 0.4 + 0.8 + 0.9) + 2)
    assert dice_loss(logits, labels, eps=0).item() == pytest.approx(1 - (d0 + d1) / 2, abs=1e-6)


def test_an_all_ignored_batch_gives_zero_loss_and_finite_gradients():
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    loss = segmentation_loss(logits, torch.full((2, 32, 32), 255))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_dice_equals_the_one_hot_formula_on_random_data():
    """The gather/scatter implementation against the textbook one-hot computation."""
    torch.manual_seed(0)
    k = 7
    logits = torch.randn(3, k, 16, 16, dtype=torch.float64)
    labels = torch.randint(0, 5, (3, 16, 16))  # classes 5, 6 absent
    labels[:, :2] = 255
    probs = logits.softmax(1)
    valid = (labels != 255)[:, None]
    onehot = F.one_hot(labels.clamp(max=k - 1) * valid[:, 0], k).permute(0, 3, 1, 2) * valid
    inter = (probs * onehot * valid).sum((0, 2, 3))
    dice = (2 * inter + 1e-5) / ((probs * valid).sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1e-5)
    want = 1 - dice[onehot.sum((0, 2, 3)) > 0].mean()
    assert dice_loss(logits, labels).item() == pytest.approx(want.item(), rel=1e-6)
