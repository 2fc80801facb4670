"""Model FLOPs of a real step, counted by torch's FlopCounterMode, and the peak rates MFU divides by.

Why count on the real step: what a method costs depends on which tensors need gradients (frozen
weights skip their dW GEMMs, a frozen encoder with nothing trainable below it runs no backward), so
an analytic formula per method would drift from the code; the counter sees the ops that really ran.

Why a custom mapping: the counter knows no formula for some fused attention kernels and counts them
as ZERO, e.g. ``aten._scaled_dot_product_flash_attention_for_cpu`` (docs/performance.md), which would
make every SDPA-based method look ~24 % cheaper at 1024². We also replace its formulas for the fused
backward kernels: they recompute the attention scores (2.5x the forward's matmuls), while MFU is
defined on MODEL FLOPs (PaLM, appendix B): forward 2·B·h·Nq·Nk·(d_qk + d_v), backward twice that,
exactly what the unfused ("math") attention's matmuls count. So the figure does not depend on which
attention kernel a device picks, and stock and fused attention count alike. Elementwise ops, norms
and the optimizer step count nothing (the counter's convention; well below 1 % of a ViT's FLOPs).

Peak rates are the dense tensor-core figures of :mod:`mopeft.measure.gpus` (one table for MFU and
the resource model). fp32 runs on CUDA with TF32 matmuls (``mopeft bench`` turns TF32 on), so its
MFU is taken against the tf32 figure. A device the table does not know (H100/H200 NVL, CPUs, ...)
has no default: pass ``--peak-tflops``, else MFU is omitted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mopeft.measure.gpus import gpu_for_device_name


def default_peak_tflops(device_name: str, precision: str) -> tuple[float | None, str | None]:
    """(dense peak TFLOP/s, where it comes from) for a CUDA device name; (None, None) if unknown."""
    gpu = gpu_for_device_name(device_name)
    if gpu is None or precision not in ("bf16", "tf32", "fp32"):
        return None, None
    return gpu.peak(precision), f"datasheet, {gpu.label} dense {precision}"


def _attention_forward(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    *batch, nq, d_qk = q
    return 2 * math.prod(batch) * nq * k[-2] * (d_qk + v[-1])


def _attention_backward(
    grad_out: Any, q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    # dP = dO·Vᵀ, dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q: twice the forward's matmuls, no recompute.
    return 2 * _attention_forward(q, k, v)


def _flex_backward(q: Any, k: Any, v: Any, *args: Any, out_val: Any = None, **kwargs: Any) -> int:
    return 2 * _attention_forward(q.shape, k.shape, v.shape)


_flex_backward._get_raw = True  # type: ignore[attr-defined]  # the counter passes tensors, not shapes

_FORWARD_OPS = ("_scaled_dot_product_flash_attention_for_cpu",)
_BACKWARD_OPS = (
    "_scaled_dot_product_flash_attention_for_cpu_backward",
    "_scaled_dot_product_flash_attention_backward",
    "_scaled_dot_product_efficient_attention_backward",
    "_scaled_dot_product_cudnn_attention_backward",
)


def attention_flop_mapping() -> dict[Any, Callable[..., int]]:
    """``custom_mapping`` for FlopCounterMode: model FLOPs of every fused attention op this torch has."""
    mapping: dict[Any, Callable[..., int]] = {}
    for names, formula in ((_FORWARD_OPS, _attention_forward), (_BACKWARD_OPS, _attention_backward)):
        for name in names:
            op = getattr(torch.ops.aten, name, None)
            if op is not None:
                mapping[op] = formula
    try:  # FlexAttention's backward (a higher-order op), where this torch has it
        from torch._higher_order_ops.flex_attention import flex_attention_backward
    except ImportError:  # pragma: no cover - older torch
        pass
    else:
        mapping[flex_attention_backward] = _flex_backward
    return mapping


def count_flops(fn: Callable[[], Any]) -> int:
    """Model FLOPs (2 per multiply-add) of everything ``fn()`` runs, backward included."""
    with FlopCounterMode(display=False, custom_mapping=attention_flop_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())


def mfu_pct(flops: int | None, seconds: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation in % of ``peak_tflops``; None when either is unknown."""
    if flops is None or peak_tflops is None or seconds <= 0:
        return None
    return 100.0 * flops / seconds / (peak_tflops * 1e12)
