"""The one attention function of every encoder block of every method.

SAM's attention is softmax(q·kᵀ·d^-½ + B) v with a decomposed relative-position bias
B[i, j] = rel_h[i, row(j)] + rel_w[i, col(j)] computed from the *unscaled* q. PEFT adds L prefix
keys/values in front of the block's own (VPT-Deep, MoPEFT), whose bias columns are zero or, for
MoPEFT's "logit" gate, log G_P. Every method, the stock-block ones (baseline, decoder_ft, full_ft)
included, goes through :func:`attention`, so a timing difference between methods is never a
difference of attention kernels.

Two backends (:func:`attention_backend`):

* ``"sdpa"`` (default): ``scaled_dot_product_attention`` with the bias as ``attn_mask``. The mask is
  built in ONE allocation whose row length is padded to a multiple of 16 elements: the prefix
  columns and the rel-pos body are written into slices of it, so there is no concatenation, and the
  CUDA memory-efficient kernel, which needs 16-aligned mask strides, takes it without a padded copy.
* ``"flex"``: FlexAttention with a ``score_mod`` that reads rel_h / rel_w / the prefix bias per
  score, so no (B, heads, N, N) bias tensor exists. Unfused (slow) unless compiled; the GPU check
  measures whether it pays.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "flex")
MASK_ALIGNMENT = 16  # elements; the memory-efficient CUDA kernel pads any other mask stride
_state: dict[str, Any] = {"backend": "sdpa"}


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Run the encoder's attention with ``name`` ("sdpa" or "flex") inside the block."""
    if name not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {name!r}")
    previous = _state["backend"]
    _state["backend"] = name
    try:
        yield
    finally:
        _state["backend"] = previous


def current_backend() -> str:
    return _state["backend"]


def rel_pos_terms(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, hw: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's decomposed rel-pos terms for q (B, nH, h*w, d): rel_h (B, nH, h*w, h), rel_w (B, nH, h*w, w).

    ``rel_pos_h`` / ``rel_pos_w`` are the (h, h, d) / (w, w, d) tables after ``get_rel_pos``.
    """
    b, nh, n, d = q.shape
    h, w = hw
    r_q = q.reshape(b * nh, h, w, d)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rel_pos_h.to(q.dtype)).reshape(b, nh, n, h)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rel_pos_w.to(q.dtype)).reshape(b, nh, n, w)
    return rel_h, rel_w


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rel: tuple[torch.Tensor, torch.Tensor] | None,
    hw: tuple[int, int],
    prefix_bias: torch.Tensor | None = None,
    query_prefix: int = 0,
) -> torch.Tensor:
    """softmax(q kᵀ/√d + bias) v for q (B, nH, P + N, d) and k, v (B, nH, L + N, d).

    The N token queries/keys come last. ``rel``: :func:`rel_pos_terms` of the N token queries (None:
    no rel-pos). The L leading keys are prefix keys (VPT-Deep, MoPEFT); ``prefix_bias`` (B,) is added
    to their columns for image b (None: zero). The P = ``query_prefix`` leading queries are prompt
    tokens (shallow VPT), whose rows carry no bias. Returns (B, nH, P + N, d).
    """
    n = q.shape[2] - query_prefix
    length = k.shape[2] - n
    if n <= 0 or length < 0:
        raise ValueError(f"{q.shape[2]} queries ({query_prefix} prompts) and {k.shape[2]} keys do not fit")
    if current_backend() == "flex":
        return _flex(q, k, v, rel, hw, prefix_bias, length, query_prefix)
    return _sdpa(q, k, v, rel, hw, prefix_bias, length, query_prefix)


def attention_mask(
    q: torch.Tensor,
    rel: tuple[torch.Tensor, torch.Tensor] | None,
    hw: tuple[int, int],
    prefix_bias: torch.Tensor | None,
    length: int,
    query_prefix: int = 0,
) -> torch.Tensor:
    """The (B, nH, P + N, L + N) additive mask, a view of a 16-aligned allocation (see module doc)."""
    b, nh, rows, _ = q.shape
    n = rows - query_prefix
    keys = length + n
    width = -(-keys // MASK_ALIGNMENT) * MASK_ALIGNMENT
    storage = q.new_empty(b, nh, rows, width)
    storage[..., keys:].zero_()  # never read by the kernels; zero so that nothing reads garbage
    full = storage[..., :keys]
    if query_prefix:
        full[:, :, :query_prefix].zero_()
    mask = full[:, :, query_prefix:]
    if length:
        if prefix_bias is None:
            mask[..., :length].zero_()
        else:
            mask[..., :length].copy_(prefix_bias.to(q.dtype).view(b, 1, 1, 1).expand(b, nh, n, length))
    body = mask[..., length:]
    if rel is None:
        body.zero_()
    else:
        h, w = hw
        rel_h, rel_w = rel
        grid = body.unflatten(-1, (h, w))  # (B, nH, N, h, w): key (row, col)
        grid.copy_(rel_h.unsqueeze(-1).expand_as(grid))
        grid.add_(rel_w.unsqueeze(-2))
    return full


def _sdpa(q, k, v, rel, hw, prefix_bias, length, query_prefix):
    if rel is None and prefix_bias is None:
        return F.scaled_dot_product_attention(q, k, v)
    mask = attention_mask(q, rel, hw, prefix_bias, length, query_prefix)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _flex_kernel():
    """FlexAttention, compiled on first use on CUDA (eager flex is an unfused reference)."""
    from torch.nn.attention.flex_attention import flex_attention

    if "compiled" not in _state:
        _state["compiled"] = torch.compile(flex_attention, dynamic=False)
    return flex_attention, _state["compiled"]


def _flex(q, k, v, rel, hw, prefix_bias, length, query_prefix):
    eager, compiled = _flex_kernel()
    flex_attention = compiled if q.is_cuda else eager
    w = hw[1]
    zero = q.new_zeros(())
    rel_h, rel_w = rel if rel is not None else (None, None)
    pre = prefix_bias.to(q.dtype) if prefix_bias is not None else None

    def score_mod(score, b, h, q_idx, kv_idx):
        i = (q_idx - query_prefix).clamp(min=0)
        j = (kv_idx - length).clamp(min=0)
        bias = rel_h[b, h, i, j // w] + rel_w[b, h, i, j % w] if rel_h is not None else zero
        if length:
            bias = torch.where(kv_idx < length, pre[b] if pre is not None else zero, bias)
        if query_prefix:
            bias = torch.where(q_idx < query_prefix, zero, bias)
        return score + bias

    if q.is_cuda:
        return flex_attention(q, k, v, score_mod=score_mod)
    with warnings.catch_warnings():  # CPU: the unfused reference path (tests), known to be slow
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, score_mod=score_mod)
