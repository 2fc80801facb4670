"""FLOPs of a method's model with fvcore, with no operator silently dropped.

fvcore (``FlopCountAnalysis``) only counts operators it has a handle for and *silently* skips the
rest; ``aten::scaled_dot_product_attention`` is among the skipped ones, which makes an SDPA-based
ViT-B encoder look 23.6 % cheaper (371.5 instead of 486.4 GMAC at 1024²). fvcore also keeps a
built-in list of operators it ignores without even reporting them (``aten::clamp``, ``aten::max``,
...). To make every number trustworthy we:

* clear fvcore's built-in ignore list, so that every traced operator is either counted by a handle
  or reported by ``unsupported_ops()``;
* add handles for every arithmetic operator our models use that fvcore lacks (SDPA, baddbmm, ...);
* classify each remaining operator as *no arithmetic* (views, copies, indexing) or *negligible
  elementwise* (O(numel) work, well below 1 % of a ViT's matmul cost; fvcore's own convention);
* raise ``UncountedOpError`` naming the operator for anything else, so a new PEFT module that uses
  an uncounted matrix op cannot slip through.

Unit: fvcore calls one multiply-add a "flop"; we call it what it is, a MAC, so the figures are GMAC
(1 multiply-add (MAC) = 2 FLOP), and Table 4.5 prints them as "Encoder GMAC". This is the counter
behind the table. ``mopeft bench`` counts FLOP (2 per multiply-add) with torch's ``FlopCounterMode``
(:mod:`mopeft.measure.mfu`) instead, and must: MFU needs the FLOPs of a real training step, backward
included, and fvcore's ``jit.trace`` records the forward only. On a forward the two agree exactly on
every matmul, convolution and attention operator (FLOP = 2 x MAC; tests/test_bench.py); fvcore also
counts layer norm, the counter does not, and the trace drops work whose result is never used (shallow
VPT's prompt MLP in the last block), which eager execution, and so the counter, still runs.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

# One wording of the unit for every help text and output (tests/test_flops.py checks each says it).
MAC_IS_2_FLOP = "1 multiply-add (MAC) = 2 FLOP"
UNIT = f"GMAC (fvcore's 'flop' is one multiply-add; {MAC_IS_2_FLOP})"

# Operators that move, view, allocate, index or compare data: no multiply-adds.
NO_ARITHMETIC_OPS: frozenset[str] = frozenset(
    {
        "aten::Int",
        "aten::ScalarImplicit",
        "aten::IntImplicit",
        "aten::FloatImplicit",
        "aten::size",
        "aten::numel",
        "aten::dim",
        "aten::__and__",
        "aten::__or__",
        "aten::bitwise_not",
        "aten::arange",
        "aten::cat",
        "aten::concat",
        "aten::stack",
        "aten::chunk",
        "aten::split",
        "aten::split_with_sizes",
        "aten::unbind",
        "aten::narrow",
        "aten::slice",
        "aten::select",
        "aten::index",
        "aten::index_select",
        "aten::gather",
        "aten::index_put_",
        "aten::masked_fill",
        "aten::masked_fill_",
        "aten::nonzero",
        "aten::where",
        "aten::contiguous",
        "aten::copy_",
        "aten::clone",
        "aten::detach",
        "aten::to",
        "aten::type_as",
        "aten::view",
        "aten::view_as",
        "aten::reshape",
        "aten::reshape_as",
        "aten::flatten",
        "aten::unflatten",
        "aten::permute",
        "aten::transpose",
        "aten::t",
        "aten::squeeze",
        "aten::unsqueeze",
        "aten::unsqueeze_",
        "aten::expand",
        "aten::expand_as",
        "aten::repeat",
        "aten::repeat_interleave",
        "aten::roll",
        "aten::pad",
        "aten::constant_pad_nd",
        "aten::empty",
        "aten::new_empty",
        "aten::zero_",
        "aten::fill_",
        "aten::zeros",
        "aten::zeros_like",
        "aten::new_zeros",
        "aten::ones",
        "aten::ones_like",
        "aten::new_ones",
        "aten::full",
        "aten::full_like",
        "aten::new_full",
        "aten::dropout",
        "aten::feature_dropout",
        "aten::alias",
        "aten::lift_fresh",
        "aten::eq",
        "aten::ne",
        "aten::ge",
        "aten::gt",
        "aten::le",
        "aten::lt",
        "aten::floor_divide",
        "aten::remainder",
        "aten::floor",
        "aten::ceil",
        "aten::round",
        "aten::detach_",
        "aten::item",
        "aten::tensor",
        "aten::scalar_tensor",
        "aten::as_strided",
        "aten::embedding",
        "aten::eye",  # an identity matrix is written, not computed (peft's DoRA builds one)
        "aten::numpy_T",  # ``tensor.T``: a view
        "prim::PythonOp",
        "prim::Constant",
        "prim::ListConstruct",
        "prim::TupleConstruct",
    }
)

# Elementwise / reduction arithmetic: O(numel) work, ≪1 % of the matmul cost of a ViT
# (fvcore's convention, maintainer in fvcore#129; docs/performance.md lists them for ViT-B).
# They are deliberately NOT counted so figures stay comparable with published fvcore numbers;
# the number of calls is still reported as "uncounted_elementwise_ops".
NEGLIGIBLE_ELEMENTWISE_OPS: frozenset[str] = frozenset(
    {
        "aten::add",
        "aten::add_",
        "aten::sub",
        "aten::sub_",
        "aten::rsub",
        "aten::mul",
        "aten::mul_",
        "aten::div",
        "aten::div_",
        "aten::neg",
        "aten::pow",
        "aten::sqrt",
        "aten::rsqrt",
        "aten::exp",
        "aten::log",
        "aten::abs",
        "aten::sin",
        "aten::cos",
        "aten::reciprocal",
        "aten::square",
        "aten::softmax",
        "aten::log_softmax",
        "aten::_softmax",
        "aten::_safe_softmax",
        "aten::sigmoid",
        "aten::sigmoid_",
        "aten::tanh",
        "aten::tanh_",
        "aten::gelu",
        "aten::gelu_",
        "aten::relu",
        "aten::relu_",
        "aten::silu",
        "aten::silu_",
        "aten::clamp",
        "aten::clamp_",
        "aten::clamp_min",
        "aten::clamp_max",
        "aten::max",
        "aten::min",
        "aten::maximum",
        "aten::minimum",
        "aten::mean",
        "aten::sum",
        "aten::norm",
        "aten::linalg_vector_norm",
        "aten::cumsum",
        "aten::argmax",
        "aten::topk",
        "aten::lerp",
        "aten::addcmul",
    }
)


class UncountedOpError(RuntimeError):
    """An operator was traced that is neither counted nor explicitly declared free/negligible."""


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise UncountedOpError(f"cannot read the shape of an input of {value.node().kind()}")
    return list(shape)


def sdpa_macs(q_shape: list[int], k_shape: list[int], v_shape: list[int]) -> int:
    """MACs of softmax(q kᵀ) v: batch·heads·Nq·Nk·(d_qk + d_v) (QKᵀ plus attention·V)."""
    *batch, nq, d_qk = q_shape
    nk, d_v = k_shape[-2], v_shape[-1]
    return math.prod(batch) * nq * nk * (d_qk + d_v)


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return sdpa_macs(_shape(inputs[0]), _shape(inputs[1]), _shape(inputs[2]))


def _baddbmm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # baddbmm(input, batch1 (b,n,m), batch2 (b,m,p)) -> b·n·m·p MACs
    b, n, m = _shape(inputs[1])
    return b * n * m * _shape(inputs[2])[-1]


def einsum_macs(equation: str, shapes: list[list[int]]) -> int | None:
    """Exact MACs of a two-operand einsum: the product of the sizes of all distinct indices.

    fvcore's generic path parses numpy's ``einsum_path`` report, which is printed with 4
    significant digits (e.g. 32768 -> 3.277e+04), so its counts are slightly off; this is exact.
    Returns None for other forms (left to fvcore).
    """
    equation = equation.replace(" ", "")
    if "->" not in equation or "." in equation:
        return None
    operands = equation.split("->")[0].split(",")
    if len(operands) != 2 or len(shapes) != 2:
        return None
    sizes: dict[str, int] = {}
    for letters, shape in zip(operands, shapes, strict=True):
        if len(letters) != len(shape):
            return None
        for letter, n in zip(letters, shape, strict=True):
            sizes[letter] = max(sizes.get(letter, 1), n)  # max: broadcast dims of size 1
    return math.prod(sizes.values())


def _einsum_handle(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import einsum_flop_jit

    equation = inputs[0].toIValue()
    shapes = [_shape(v) for v in inputs[1].node().inputs()]
    macs = einsum_macs(equation, shapes)
    return int(einsum_flop_jit(inputs, outputs)) if macs is None else macs


def _linalg_norm_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # A vector/matrix norm squares and sums every input element: one multiply-add each (peft's DoRA
    # takes the row norms of its weight once per forward).
    return math.prod(_shape(inputs[0]))


def hada_weight_macs(w1a: list[int], w1b: list[int], w2a: list[int], w2b: list[int]) -> int:
    """MACs of peft LoHa's ``HadaWeight``, ``((w1a @ w1b) * (w2a @ w2b)) * scale``: its two low-rank
    products plus the Hadamard product (the scalar scale is elementwise, not counted)."""
    out, r1 = w1a
    r2, inp = w2b
    return out * r1 * w1b[1] + w2a[0] * r2 * inp + out * inp


def _hada_weight_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # The autograd Function's inputs are traced as they are: w1a (out, r), w1b (r, in), w2a, w2b, scale.
    return hada_weight_macs(*(_shape(v) for v in inputs[:4]))


def _kron_handle(inputs: list[Any], outputs: list[Any]) -> int:
    # kron(A, B): every output element is one product of an element of A and one of B.
    return math.prod(_shape(outputs[0]))


def _conv_transpose_handle(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import conv_flop_count

    x, w, out = _shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0])
    return conv_flop_count(x, w, out, transposed=True)


def _conv_handle(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import conv_flop_count

    return conv_flop_count(_shape(inputs[0]), _shape(inputs[1]), _shape(outputs[0]), transposed=False)


EXTRA_HANDLES = {
    "aten::scaled_dot_product_attention": _sdpa_handle,
    "aten::baddbmm": _baddbmm_handle,
    "aten::einsum": _einsum_handle,
    "aten::conv2d": _conv_handle,
    "aten::conv_transpose2d": _conv_transpose_handle,
    # HF peft tuners (config peft_methods): DoRA's weight norm, LoHa's weight, LoKr's weight.
    "aten::linalg_norm": _linalg_norm_handle,
    "prim::PythonOp.HadaWeight": _hada_weight_handle,
    "aten::kron": _kron_handle,
}


@dataclass
class FlopReport:
    """fvcore counts (MAC) of one traced forward, split by top-level module and by operator."""

    total: int
    by_module: dict[str, int]
    by_operator: dict[str, dict[str, int]]
    uncounted_elementwise_ops: dict[str, int] = field(default_factory=dict)

    def gmac(self, module: str = "") -> float:
        return (self.total if module == "" else self.by_module.get(module, 0)) / 1e9


def count_macs(model: nn.Module, inputs: tuple[Any, ...], modules: tuple[str, ...] = ()) -> FlopReport:
    """Trace ``model(*inputs)`` once and count MACs; raise ``UncountedOpError`` on unclassified ops."""
    with warnings.catch_warnings():
        # fvcore's import runs torch.jit.script (deprecated in torch 2.x): noise, not about our model
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, inputs)
    for name, handle in EXTRA_HANDLES.items():
        analysis.set_op_handle(name, handle)
    # Make fvcore report every op it does not count (its built-in ignore list would hide some).
    analysis._ignored_ops = set()
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    total = int(analysis.total())
    unsupported: Counter[str] = analysis.unsupported_ops()
    unknown = sorted(op for op in unsupported if op not in NO_ARITHMETIC_OPS | NEGLIGIBLE_ELEMENTWISE_OPS)
    if unknown:
        raise UncountedOpError(
            f"operator(s) {unknown} are neither counted by a FLOP handle nor declared free/negligible in "
            "mopeft.measure.flops; add a handle (EXTRA_HANDLES) or classify them explicitly"
        )
    by_module = {m: int(analysis.total(m)) for m in modules}
    by_operator = {m: {op: int(v) for op, v in analysis.by_operator(m).items()} for m in ("", *modules)}
    elementwise = {op: n for op, n in sorted(unsupported.items()) if op in NEGLIGIBLE_ELEMENTWISE_OPS}
    return FlopReport(total, by_module, by_operator, elementwise)


MODEL_PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def model_flops(
    arch: str,
    method: str,
    method_options: dict[str, Any] | None = None,
    image_size: int | None = None,
    num_classes: int = 2,
) -> dict[str, Any]:
    """Build a method's model (random weights: FLOPs do not depend on values) and count one image."""
    from mopeft.methods.build import build_model
    from mopeft.peft.state import fold_prefixes

    model = build_model(arch, num_classes, method, dict(method_options or {}), image_size=image_size)
    # Count the deployed model: a prefix reparametrisation MLP exists only during training.
    fold_prefixes(model)
    model.eval()
    size = int(model.image_size)
    images = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        report = count_macs(model, (images,), MODEL_PARTS)

    def gm(v: int) -> float:
        return round(v / 1e9, 6)

    return {
        "arch": arch,
        "method": method,
        "method_options": dict(method_options or {}),
        "image_size": size,
        "num_classes": num_classes,
        "batch_size": 1,
        "unit": UNIT,
        "image_encoder_gmac": gm(report.by_module["image_encoder"]),
        "mask_decoder_gmac": gm(report.by_module["mask_decoder"]),
        "prompt_encoder_gmac": gm(report.by_module["prompt_encoder"]),
        "total_gmac": gm(report.total),
        "macs": {"total": report.total, **report.by_module},  # exact integers behind the GMAC figures
        "by_operator_gmac": {
            (part or "total"): {op: gm(v) for op, v in sorted(ops.items())}
            for part, ops in report.by_operator.items()
        },
        "uncounted_elementwise_ops": report.uncounted_elementwise_ops,
        "uncounted_note": "elementwise/reduction ops are not counted (fvcore convention, <1 % of a ViT)",
    }
