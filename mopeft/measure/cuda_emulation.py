"""What a CUDA step does differently from a CPU one, reproduced on (fake) CPU tensors.

A shape-only step at the study's size runs on fake CPU tensors: fake CUDA tensors would be closer,
but autograd's engine asks the CUDA driver for a device context in backward, which a machine
without a GPU does not have. Two things in a training step depend on the device, and both decide
memory, so both are emulated here:

* **Autocast.** ``torch.autocast("cuda", bfloat16)`` casts per operator: matmul-like ops run in bf16
  (``LOWER_PRECISION``), a list of numerically sensitive ops (layer norm, pow, softmax, losses, ...)
  runs in fp32 (``FP32``, ``FP32_UNLESS_DTYPE``), everything else in its inputs' widest dtype
  (``PROMOTE``: mixed inputs are cast to the widest; others untouched). :class:`CudaAutocast` applies
  the same lists as a ``TorchFunctionMode``, i.e. ABOVE autograd, exactly where autocast itself
  sits, so autograd saves the bf16 copies and the gradients get the dtypes they get on CUDA. The
  lists follow ``aten/src/ATen/autocast_mode.cpp`` (CUDA) for the ops this project calls;
  ``tests/test_resource_model.py`` checks them against the real AutocastCUDA kernels: every op
  output of a whole forward has the same dtype under both.
* **The attention kernel.** With a float mask that requires grad, CUDA's SDPA picks the
  memory-efficient (CUTLASS) kernel: it saves q, k, v, the mask, the output and a fp32
  log-sum-exp per query, never a (B, heads, N, N) probability map, and its backward returns the
  mask's gradient in the mask's dtype. On the CPU the same call takes the math fallback (bmm +
  softmax, saving the N×N map). :class:`CudaAutocast` routes ``scaled_dot_product_attention`` to
  ``aten._scaled_dot_product_efficient_attention`` (its meta kernel gives the CUDA shapes; its
  autograd formula is CUDA's), after padding the mask's rows to 16 elements as CUDA's dispatcher
  does. Without a mask CUDA would take the flash kernel; the efficient kernel saves the same
  tensors but a 32-row-padded log-sum-exp, a difference of < 0.1 % of the step.

Not emulated: cuBLAS/cuDNN algorithm choice and workspaces, and kernel fusion (there is none in
eager mode).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

# Names of the torch functions / Tensor methods this project calls, by autocast category.
LOWER_PRECISION = frozenset(
    {
        "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d", "matmul", "__matmul__", "__rmatmul__", "mm", "bmm", "baddbmm", "addmm",
        "addbmm", "addmv", "addr", "mv", "einsum", "prelu", "scaled_dot_product_attention",
        "chain_matmul", "linalg_multi_dot",
    }
)  # fmt: skip
FP32 = frozenset(
    {
        "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
        "reciprocal", "rsqrt", "sinh", "tan", "pow", "__pow__", "__rpow__", "softplus", "layer_norm",
        "group_norm", "norm", "cosine_similarity", "nll_loss", "cross_entropy", "kl_div", "l1_loss",
        "smooth_l1_loss", "huber_loss", "mse_loss", "binary_cross_entropy_with_logits", "dist",
        "cdist", "renorm", "logsumexp",
        "interpolate",  # CUDA's fp32 list has the nearest/linear upsample kernels: every mode used here
    }
)  # fmt: skip
# Run in fp32 unless the call gives a dtype (autocast's "fp32_set_opt_dtype").
FP32_UNLESS_DTYPE = frozenset(
    {"softmax", "log_softmax", "cumprod", "cumsum", "prod", "sum", "nansum"}
)  # fmt: skip
PROMOTE = frozenset(
    {"cat", "stack", "addcdiv", "addcmul", "atan2", "cross", "dot", "index_put", "scatter_add"}
)  # fmt: skip


@contextlib.contextmanager
def cuda_autocast(dtype: torch.dtype = torch.bfloat16, attention_kernel: str = "efficient") -> Iterator[None]:
    """Emulate ``torch.autocast("cuda", dtype)`` (see :class:`CudaAutocast`). A nested
    ``torch.autocast(..., enabled=False)`` in the model (the gates use one) switches the emulation
    off inside it, as it switches CUDA's autocast off."""
    mode = CudaAutocast(dtype, attention_kernel)
    cls = torch.amp.autocast_mode.autocast
    enter, exit_ = cls.__enter__, cls.__exit__
    stack: list[bool] = []

    def patched_enter(self):
        stack.append(mode.enabled)
        if not self._enabled:
            mode.enabled = False
        return enter(self)

    def patched_exit(self, *exc):
        mode.enabled = stack.pop()
        return exit_(self, *exc)

    cls.__enter__, cls.__exit__ = patched_enter, patched_exit
    try:
        with mode:
            yield
    finally:
        cls.__enter__, cls.__exit__ = enter, exit_


def _name(func: Any) -> str:
    return getattr(func, "__name__", "")


def _cast(x: Any, dtype: torch.dtype) -> Any:
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float64:
        return x.to(dtype)
    return x


class CudaAutocast(TorchFunctionMode):
    """CUDA's bf16 autocast (and its SDPA kernel) for a CPU step; see the module doc."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16, attention_kernel: str = "efficient") -> None:
        super().__init__()
        self.dtype = dtype
        self.attention_kernel = attention_kernel
        self.enabled = True

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        if not self.enabled:
            return func(*args, **kwargs)
        if name in LOWER_PRECISION:
            args, kwargs = tree_map(lambda x: _cast(x, self.dtype), (args, kwargs))
            if name == "scaled_dot_product_attention" and self.attention_kernel == "efficient":
                return efficient_attention(*args, **kwargs)
        elif name in FP32 or (name in FP32_UNLESS_DTYPE and kwargs.get("dtype") is None):
            args, kwargs = tree_map(lambda x: _cast(x, torch.float32), (args, kwargs))
        elif name in PROMOTE:
            flat = tree_flatten((args, kwargs))[0]
            floats = [t for t in flat if isinstance(t, torch.Tensor) and t.is_floating_point()]
            if len({t.dtype for t in floats}) > 1:
                widest = max((t.dtype for t in floats), key=lambda d: torch.finfo(d).bits)
                args, kwargs = tree_map(lambda x: _cast(x, widest), (args, kwargs))
        return func(*args, **kwargs)


def efficient_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> torch.Tensor:
    """``scaled_dot_product_attention`` through the CUDA memory-efficient kernel's op (its autograd
    formula saves what the CUDA kernel saves). The mask is given a 16-aligned row stride first,
    as CUDA's dispatcher does for a mask whose rows are not (a padded copy)."""
    if dropout_p or is_causal or enable_gqa:
        raise NotImplementedError("the emulated kernel covers the project's attention calls only")
    if attn_mask is not None:
        attn_mask = attn_mask.to(q.dtype)
        keys = attn_mask.shape[-1]
        if attn_mask.stride(-2) % 16 or attn_mask.stride(-1) != 1:
            padded = math.ceil(keys / 16) * 16
            attn_mask = F.pad(attn_mask, (0, padded - keys))[..., :keys]
        attn_mask = attn_mask.expand(q.shape[0], q.shape[1], q.shape[2], keys)
    compute_lse = any(t.requires_grad for t in (q, k, v)) or (
        attn_mask is not None and attn_mask.requires_grad
    )
    out = torch.ops.aten._scaled_dot_product_efficient_attention(
        q, k, v, attn_mask, compute_lse, 0.0, False, scale=scale
    )
    return out[0]
