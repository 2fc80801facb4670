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


# ------------------------------------------------- the "full" path against the batch-wide implementation
def _reference_full_loss(logits, labels, ce_weight=0.2, dice_weight=0.8, eps=1e-5):
    """The full-resolution loss as it was written before the per-image rewrite (loss_target "full",
    cross-entropy, dice_loss), verbatim but for ``.float()`` -> a cast that keeps fp64, so that the
    comparison is exact to rounding: it upsamples the whole batch to K × S × S and lets autograd keep it."""

    def as_float(t):
        return t if t.dtype == torch.float64 else t.float()

    labels = labels.long()
    if tuple(logits.shape[-2:]) != tuple(labels.shape[-2:]):
        logits = F.interpolate(
            as_float(logits), size=tuple(labels.shape[-2:]), mode="bilinear", align_corners=False
        )
    labelled = (labels != 255).sum().clamp_min(1)
    ce = F.cross_entropy(as_float(logits), labels, ignore_index=255, reduction="sum") / labelled
    k = logits.shape[1]
    probs = as_float(logits).softmax(dim=1)
    valid = labels != 255
    own = torch.where(valid, labels, 0).clamp(max=k - 1)
    weight = valid.to(probs.dtype)
    p_own = probs.gather(1, own[:, None])[:, 0] * weight
    inter = torch.zeros(k, dtype=probs.dtype).scatter_add_(0, own.flatten(), p_own.flatten())
    target_sum = torch.zeros(k, dtype=probs.dtype).scatter_add_(0, own.flatten(), weight.flatten())
    pred_sum = torch.einsum("bkn,bn->k", probs.flatten(2), weight.flatten(1))
    dice = (2 * inter + eps) / (pred_sum + target_sum + eps)
    present = (target_sum > 0).to(dice.dtype)
    return ce_weight * ce + dice_weight * ((1 - dice) * present).sum() / present.sum().clamp_min(1)


def _random_case(b, k, layout, seed, dtype=torch.float64, scale=3.0):
    """Logits (B,K,S/4,S/4)-like and labels as the trainer pads them: 255 outside each image's content,
    scattered 255 inside, and labels drawn from a subset of the classes (some absent from the batch)."""
    gen = torch.Generator().manual_seed(seed)
    h, w = {"square": (8, 8), "wide": (6, 9), "tall": (7, 5)}[layout]
    labels = torch.full((b, 4 * h, 4 * w), 255, dtype=torch.long)
    classes = torch.randperm(k, generator=gen)[: max(1, (2 * k) // 3)]  # about a third of the classes absent
    for i in range(b):
        ch, cw = 4 * h - 3 * i - 1, 4 * w - 5 * i  # padded bottom/right, a different content size per image
        pick = torch.randint(0, len(classes), (ch, cw), generator=gen)
        labels[i, :ch, :cw] = classes[pick]
    labels[torch.rand(labels.shape, generator=gen) < 0.1] = 255
    logits = (scale * torch.randn(b, k, h, w, generator=gen)).to(dtype)
    return logits.requires_grad_(), labels


def _loss_and_grad(fn, logits, labels, **kw):
    logits = logits.detach().requires_grad_()
    loss = fn(logits, labels, **kw)
    (grad,) = torch.autograd.grad(loss, logits)
    return loss.detach(), grad


def _assert_rel_close(got, want, rel):
    scale = want.abs().max().clamp_min(1e-300)
    assert ((got - want).abs().max() / scale).item() <= rel, ((got - want).abs().max() / scale).item()


@pytest.mark.parametrize("k", [2, 7, 30])
@pytest.mark.parametrize("b", [1, 2, 3])
@pytest.mark.parametrize("layout", ["square", "wide", "tall"])
def test_full_resolution_loss_and_gradient_equal_the_batch_wide_implementation(k, b, layout):
    logits, labels = _random_case(b, k, layout, seed=100 * k + 10 * b + len(layout))
    loss, grad = _loss_and_grad(segmentation_loss, logits, labels)
    want_loss, want_grad = _loss_and_grad(_reference_full_loss, logits, labels)
    assert loss.dtype == want_loss.dtype == torch.float64 and grad.dtype == torch.float64
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-12)
    _assert_rel_close(grad, want_grad, 1e-12)


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (0.7, 0.3)])
def test_full_resolution_gradient_is_right_for_each_term_alone(weights):
    """CE and Dice have separate terms in the analytic gradient: each is checked without the other."""
    logits, labels = _random_case(2, 7, "wide", seed=7)
    kw = dict(ce_weight=weights[0], dice_weight=weights[1])
    loss, grad = _loss_and_grad(segmentation_loss, logits, labels, **kw)
    want_loss, want_grad = _loss_and_grad(_reference_full_loss, logits, labels, **kw)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-12)
    _assert_rel_close(grad, want_grad, 1e-12)


def test_logits_already_at_the_label_size_take_the_same_path():
    logits, labels = _random_case(2, 5, "square", seed=3)
    logits = F.interpolate(logits.detach(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    loss, grad = _loss_and_grad(segmentation_loss, logits, labels)
    want_loss, want_grad = _loss_and_grad(_reference_full_loss, logits, labels)
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-12)
    _assert_rel_close(grad, want_grad, 1e-12)


def test_full_resolution_gradient_passes_gradcheck():
    """Finite differences, independently of the reference: a wrong analytic term fails here."""
    logits, labels = _random_case(2, 4, "tall", seed=11, scale=1.0)
    logits = logits.detach()[:, :, :3, :2].contiguous().requires_grad_()
    labels = labels[:, :12, :8].contiguous()
    assert torch.autograd.gradcheck(lambda x: segmentation_loss(x, labels), (logits,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(
        lambda x: segmentation_loss(x, labels, ce_weight=0.0, dice_weight=1.0), (logits,), eps=1e-6, atol=1e-8
    )


def test_an_all_ignored_full_resolution_batch_gives_exact_zeros():
    logits = torch.randn(2, 5, 6, 9, dtype=torch.float64, requires_grad=True)
    loss, grad = _loss_and_grad(segmentation_loss, logits, torch.full((2, 24, 36), 255))
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_confident_wrong_logits_give_a_finite_cross_entropy_in_fp32():
    """p_y underflows to 0 in fp32 here; the log-sum-exp is taken from the largest probability instead."""
    logits = torch.zeros(1, 3, 2, 2)
    logits[:, 0] = 200.0
    labels = torch.full((1, 8, 8), 2)
    loss, grad = _loss_and_grad(segmentation_loss, logits, labels, ce_weight=1.0, dice_weight=0.0)
    assert loss.item() == pytest.approx(200.0, rel=1e-6) and torch.isfinite(grad).all()


def test_bf16_logits_compute_in_fp32_and_get_a_bf16_gradient():
    logits, labels = _random_case(2, 7, "square", seed=5, dtype=torch.bfloat16)
    loss, grad = _loss_and_grad(segmentation_loss, logits, labels)
    want_loss, want_grad = _loss_and_grad(_reference_full_loss, logits, labels)
    assert loss.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5)
    _assert_rel_close(grad.float(), want_grad.float(), 1e-2)  # a bf16 ulp of the largest entry


def test_backward_keeps_only_the_small_logits_and_the_labels():
    """What autograd saves: no tensor of K × S × S (nor of S × S floats) from the whole batch."""
    logits, labels = _random_case(3, 30, "square", seed=1, dtype=torch.float32)
    saved: list[torch.Tensor] = []

    def pack(t):
        saved.append(t)
        return t

    for fn in (segmentation_loss, _reference_full_loss):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn(logits, labels)
        biggest = max(t.numel() * t.element_size() for t in saved)
        if fn is segmentation_loss:
            assert biggest <= max(logits.numel() * 4, labels.numel() * 8)
        else:  # the reference keeps the upsampled batch: the test can tell the two apart
            assert biggest >= labels.numel() * 30 * 4


def test_full_resolution_loss_never_waits_for_the_device():
    """No .item()/bool() of a tensor (aten._local_scalar_dense) and no data-dependent shape, fwd or bwd."""
    from torch.utils._python_dispatch import TorchDispatchMode

    syncing = {"_local_scalar_dense", "nonzero", "masked_select", "unique", "_unique2", "masked_scatter"}

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(func._schema.name.split("::")[-1])
            return func(*args, **(kwargs or {}))

    logits, labels = _random_case(2, 7, "wide", seed=2, dtype=torch.float32)
    with Ops() as ops:
        segmentation_loss(logits, labels).backward()
    assert "upsample_bilinear2d_backward" in ops.names and not ops.names & syncing
