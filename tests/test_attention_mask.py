"""SDPA's additive mask: values and gradients equal the previous in-place construction, in fp64.

The mask is now a custom autograd Function (forward written once, backward = sums). The reference is a
verbatim copy of the construction it replaced (``copy_``/``add_`` into views under autograd), plus the
materialised bias of ``rel_pos_bias`` for the values.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_peft import GLOBAL

from mopeft.peft.attention import MASK_ALIGNMENT, attention_mask
from mopeft.peft.block import block_rel_terms, rel_pos_bias


def _load_bench():
    """scripts/bench_attention_mask.py keeps the replaced in-place construction, verbatim: the
    reference of these tests and the "old" side of its figures (one copy)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts/bench_attention_mask.py"
    spec = importlib.util.spec_from_file_location("bench_attention_mask", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inplace_mask = _load_bench().inplace_mask


# (B', heads, token grid): windowed = many small windows, global = few images with a larger, non-square grid.
SHAPES = {"windowed": (8, 2, (4, 4)), "global": (2, 3, (5, 7))}


def _inputs(shape, prompts, with_rel, prefix, seed=0):
    b, nh, hw = SHAPES[shape]
    g = torch.Generator().manual_seed(seed)
    n, d = hw[0] * hw[1], 8
    q = torch.randn(b, nh, prompts + n, d, dtype=torch.float64, generator=g)
    rel = None
    if with_rel:
        rel = tuple(torch.randn(b, nh, n, s, dtype=torch.float64, generator=g).requires_grad_() for s in hw)
    bias = torch.randn(b, dtype=torch.float64, generator=g).requires_grad_() if prefix == "bias" else None
    length = 0 if prefix == "none" else 3
    return q, rel, hw, bias, length


CASES = [
    (shape, prompts, with_rel, prefix)
    for shape in SHAPES
    for prompts in (0, 2)
    for with_rel in (True, False)
    for prefix in ("none", "zero", "bias")
    if with_rel or prefix == "bias"  # otherwise nothing requires grad
]


@pytest.mark.parametrize(("shape", "prompts", "with_rel", "prefix"), CASES)
def test_values_and_gradients_equal_the_inplace_construction(shape, prompts, with_rel, prefix):
    q, rel, hw, bias, length = _inputs(shape, prompts, with_rel, prefix)
    got = attention_mask(q, rel, hw, bias, length, prompts)
    want = inplace_mask(q, rel, hw, bias, length, prompts)
    assert got.shape == want.shape and got.dtype == q.dtype
    assert torch.equal(got, want)
    # The gradient of any loss: a random upstream gradient, the same for both.
    upstream = torch.randn(got.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    leaves = [t for t in (*(rel or ()), bias) if t is not None]
    g_got = torch.autograd.grad(got, leaves, upstream)
    g_want = torch.autograd.grad(want, leaves, upstream)
    for a, b in zip(g_got, g_want, strict=True):
        assert a.shape == b.shape and (a - b).abs().max().item() < 1e-12
    assert type(got.grad_fn).__name__ == "_MaskBackward"  # no CopySlices: autograd saw no in-place write


def test_gradients_equal_the_explicit_sums():
    """Independent of either construction: d mask / d rel_h sums key columns, rel_w key rows, bias all."""
    q, (rel_h, rel_w), hw, bias, length = _inputs("global", 2, True, "bias", seed=4)
    upstream = torch.randn(*q.shape[:3], length + hw[0] * hw[1], dtype=torch.float64)
    mask = attention_mask(q, (rel_h, rel_w), hw, bias, length, 2)
    got = torch.autograd.grad(mask, (rel_h, rel_w, bias), upstream)
    body = upstream[:, :, 2:, length:].reshape(*rel_h.shape[:3], *hw)
    want = (body.sum(-1), body.sum(-2), upstream[:, :, 2:, :length].sum((1, 2, 3)))
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() < 1e-12


def test_mask_equals_the_materialised_bias_and_is_an_aligned_view(blocks):
    blk = copy.deepcopy(blocks[GLOBAL]).double()
    q = torch.randn(3, 4, 36, 16, dtype=torch.float64)
    bias = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    mask = attention_mask(q, block_rel_terms(q, blk, (6, 6)), (6, 6), bias, length=5)
    assert mask.shape == (3, 4, 36, 41) and mask._base is not None  # a view of the padded allocation
    assert all(s % MASK_ALIGNMENT == 0 for s in mask.stride()[:-1]) and mask.stride(-1) == 1
    assert (mask[..., 5:] - rel_pos_bias(q, blk, (6, 6))).abs().max().item() < 1e-12
    assert torch.equal(mask[..., :5], bias.view(3, 1, 1, 1).expand(3, 4, 36, 5))
    assert torch.equal(mask._base[..., 41:], torch.zeros(3, 4, 36, 48 - 41, dtype=torch.float64))


def test_mask_follows_qs_dtype_and_gradients_the_inputs_dtype():
    """bf16 q: the mask (SDPA's attn_mask) is bf16 even from fp32 bias parts; their gradients are fp32."""
    g = torch.Generator().manual_seed(5)
    q = torch.randn(2, 2, 16, 8, dtype=torch.bfloat16, generator=g)
    rel = tuple(torch.randn(2, 2, 16, 4, generator=g).requires_grad_() for _ in range(2))
    bias = torch.randn(2, generator=g).requires_grad_()
    got, want = (f(q, rel, (4, 4), bias, 3) for f in (attention_mask, inplace_mask))
    assert got.dtype == want.dtype == torch.bfloat16
    assert (got.float() - want.float()).abs().max().item() <= 2**-7 * want.abs().max().item()  # one rounding
    grads = torch.autograd.grad(got.float().sum(), (*rel, bias))
    assert all(t.dtype == torch.float32 for t in grads)


def test_compiled_mask_equals_eager():
    """Under Dynamo the body is built by copy_ (out= into a view is not traceable): same values and grads."""
    q, rel, hw, bias, length = _inputs("windowed", 2, True, "bias", seed=2)
    leaves = (*rel, bias)

    def loss(*args):
        return attention_mask(q, args[:2], hw, args[2], length, 2).square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="eager", fullgraph=True)
    got = torch.autograd.grad(compiled(*leaves), leaves)
    want = torch.autograd.grad(loss(*leaves), leaves)
    for a, b in zip(got, want, strict=True):
        assert (a - b).abs().max().item() < 1e-12
