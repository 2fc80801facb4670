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
  A custom autograd Function writes it (the body in one pass) and reduces its gradient by sums, so
  autograd never differentiates the in-place writes (scripts/bench_attention_mask.py: ~6x fewer
  bytes in backward at ViT-B 1024²).
* ``"flex"``: FlexAttention with a ``score_mod`` that reads rel_h / rel_w / the prefix bias per
  score, so no (B, heads, N, N) bias tensor exists. Unfused (slow) unless compiled: on CUDA it is
  compiled once per call signature (block shape, grad mode, ...), each in its own Dynamo region, so a
  run never reaches Dynamo's recompile limit (which would fall back to the unfused kernel silently).
  The GPU check measures whether it pays.
"""

from __future__ import annotations

import contextlib
import inspect
import types
import warnings
from collections.abc import Callable, Iterator
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
    """The (B, nH, P + N, L + N) additive mask in q's dtype, a view of a 16-aligned allocation.

    Built by :class:`_Mask`, whose backward is three sums: autograd never sees the in-place writes
    into the allocation (with them, its backward re-copied the whole mask several times).
    """
    rel_h, rel_w = rel if rel is not None else (None, None)
    if torch.jit.is_tracing():
        # jit.trace (fvcore's FLOP count, mopeft.measure.flops) would record the Function as one opaque
        # op; it sees the same writes as plain aten ops instead (a FLOP count runs no backward).
        return _write_mask(q, rel_h, rel_w, prefix_bias, hw, length, query_prefix)
    return _Mask.apply(rel_h, rel_w, prefix_bias, q, hw, length, query_prefix)


def _write_mask(
    q: torch.Tensor,
    rel_h: torch.Tensor | None,
    rel_w: torch.Tensor | None,
    prefix_bias: torch.Tensor | None,
    hw: tuple[int, int],
    length: int,
    query_prefix: int,
) -> torch.Tensor:
    """The mask's values: each part written once into slices of one padded allocation (no autograd)."""
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
    if rel_h is None or rel_w is None:
        body.zero_()
    else:
        grid = body.unflatten(-1, hw)  # (B, nH, N, h, w): key (row, col)
        if torch.compiler.is_compiling():  # Dynamo cannot trace out= into a view; inductor fuses this
            grid.copy_(rel_h.unsqueeze(-1) + rel_w.unsqueeze(-2))
        else:  # one pass: the (B, nH, N, N) body is written once and never read
            torch.add(rel_h.unsqueeze(-1), rel_w.unsqueeze(-2), out=grid)
    return full


class _Mask(torch.autograd.Function):
    """The mask as one autograd node: forward :func:`_write_mask`, backward = sums of its gradient.

    Why: the mask is a broadcast sum, so its gradient is grad_rel_h = Σ over key columns, grad_rel_w =
    Σ over key rows, grad_prefix_bias[b] = Σ over heads, token rows and prefix columns. Built from
    ``copy_``/``add_`` into views under autograd, the same mask made autograd clone and re-copy the
    (B, nH, N, N) gradient several times (CopySlices): ~6x the bytes of these sums. q gives shape,
    dtype and device and gets no gradient here.
    """

    @staticmethod
    def forward(
        ctx: Any,
        rel_h: torch.Tensor | None,
        rel_w: torch.Tensor | None,
        prefix_bias: torch.Tensor | None,
        q: torch.Tensor,
        hw: tuple[int, int],
        length: int,
        query_prefix: int,
    ) -> torch.Tensor:
        ctx.layout = (hw, length, query_prefix)
        ctx.dtypes = tuple(t.dtype if t is not None else None for t in (rel_h, rel_w, prefix_bias))
        return _write_mask(q, rel_h, rel_w, prefix_bias, hw, length, query_prefix)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hw, length, query_prefix = ctx.layout
        need_h, need_w, need_pre = ctx.needs_input_grad[:3]
        rows = grad[:, :, query_prefix:]  # prompt rows carry no bias
        grad_h = grad_w = grad_pre = None
        if need_h or need_w:
            grid = rows[..., length:].unflatten(-1, hw)
            grad_h = grid.sum(-1).to(ctx.dtypes[0]) if need_h else None
            grad_w = grid.sum(-2).to(ctx.dtypes[1]) if need_w else None
        if need_pre and length:
            grad_pre = rows[..., :length].sum((1, 2, 3)).to(ctx.dtypes[2])
        return grad_h, grad_w, grad_pre, None, None, None, None


def _sdpa(q, k, v, rel, hw, prefix_bias, length, query_prefix):
    if rel is None and prefix_bias is None:
        return F.scaled_dot_product_attention(q, k, v)
    mask = attention_mask(q, rel, hw, prefix_bias, length, query_prefix)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


# How the flex backend compiles: inductor on CUDA. Tests swap in a recording backend and add "cpu".
FLEX_COMPILE: dict[str, Any] = {"backend": "inductor", "devices": ("cuda",)}
_flex_compiled: dict[tuple, Callable[..., torch.Tensor]] = {}


def _flex_signature(tensors: tuple[torch.Tensor | None, ...], *static: Any) -> tuple:
    """What Dynamo specialises one flex call on (dynamic=False): the tensors' shapes, strides, dtypes,
    devices and requires-grad, grad and autocast mode, and the ints the score_mod closes over."""
    device = tensors[0].device.type  # q's
    parts: list[Any] = [torch.is_grad_enabled(), torch.is_autocast_enabled(device), *static]
    if parts[1]:
        parts.append(torch.get_autocast_dtype(device))
    for t in tensors:
        parts.append(None if t is None else (t.shape, t.stride(), t.dtype, t.device, t.requires_grad))
    return tuple(parts)


def _compiled_flex(signature: tuple) -> Callable[..., torch.Tensor]:
    """FlexAttention compiled for one call signature, in its own Dynamo region.

    Why: Dynamo keeps one cache per code object, shared by every ``torch.compile(flex_attention)``,
    and stops compiling after ``recompile_limit`` (8) entries, falling back silently to the unfused
    eager flex. One run needs more: windowed and global shapes, block 0 of LoRA-like methods (a k
    without grad), train and eval (grad mode), prefix lengths, batch sizes, methods with other
    strides. With ``isolate_recompiles`` each signature gets its own region and limit and compiles
    once: as many compiles as one shared cache would need, but none is refused.
    """
    fn = _flex_compiled.get(signature)
    if fn is None:
        if "isolate_recompiles" in inspect.signature(torch.compile).parameters:
            from torch.nn.attention.flex_attention import flex_attention

            fn = torch.compile(
                flex_attention, dynamic=False, backend=FLEX_COMPILE["backend"], isolate_recompiles=True
            )
        else:  # an older torch (the GPU image's 2.11 may be one): a region of its own = a code object
            fn = torch.compile(
                _own_code_object(len(_flex_compiled)), dynamic=False, backend=FLEX_COMPILE["backend"]
            )
        _flex_compiled[signature] = fn
    return fn


def _flex_call(*args: Any, **kwargs: Any) -> torch.Tensor:
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(*args, **kwargs)


def _own_code_object(index: int) -> Callable[..., torch.Tensor]:
    """:func:`_flex_call` under a new code object: Dynamo keys its cache and its recompile limit on
    the code object, so each copy compiles (and counts recompiles) on its own."""
    code = _flex_call.__code__.replace(co_name=f"_flex_call_{index}")
    return types.FunctionType(code, _flex_call.__globals__, code.co_name)


def _flex(q, k, v, rel, hw, prefix_bias, length, query_prefix):
    from torch.nn.attention.flex_attention import flex_attention

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

    if torch.compiler.is_compiling():  # inside a compiled model (train --compile): part of its graph
        return flex_attention(q, k, v, score_mod=score_mod)
    if q.device.type in FLEX_COMPILE["devices"]:
        # One layout for every method (LoRA's q is a fresh tensor, the stock blocks' a chunk of qkv), so
        # that methods share compiled kernels; the copies are small next to the attention itself.
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        signature = _flex_signature((q, k, v, rel_h, rel_w, pre), hw, length, query_prefix)
        return _compiled_flex(signature)(q, k, v, score_mod=score_mod)
    with warnings.catch_warnings():  # CPU: the unfused reference path (tests), known to be slow
        warnings.filterwarnings("ignore", message=".*flex_attention called without torch.compile.*")
        return flex_attention(q, k, v, score_mod=score_mod)
