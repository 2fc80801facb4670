"""One attention function for every method, numerically SAM's, with or without an N×N bias tensor."""

from __future__ import annotations

import copy

import pytest
import torch
from test_peft import GLOBAL, WINDOWED, C, _randomise, _set_gate, _x, reference_block
from torch.utils._python_dispatch import TorchDispatchMode

from mopeft.methods import METHODS
from mopeft.methods.build import build_model
from mopeft.model.arch import ARCHS, build_sam_parts
from mopeft.model.sam_modeling import Block
from mopeft.peft import attention as attention_ops
from mopeft.peft.attention import MASK_ALIGNMENT, attention_backend, attention_mask, rel_pos_terms
from mopeft.peft.block import PEFTBlock, block_rel_terms, rel_pos_bias
from mopeft.peft.prefix import DeepPrompt

STOCK_BLOCK_METHODS = ("baseline", "decoder_ft", "full_ft")


def _random_rel_pos(encoder):
    # SAM zero-initialises the rel-pos tables; random ones make the bias matter.
    with torch.no_grad():
        for blk in encoder.blocks:
            blk.attn.rel_pos_h.normal_(0, 0.5)
            blk.attn.rel_pos_w.normal_(0, 0.5)


@pytest.mark.parametrize("method", STOCK_BLOCK_METHODS)
def test_stock_block_methods_equal_sams_stock_encoder_in_fp64(method):
    """baseline / decoder_ft / full_ft no longer run SAM's Attention.forward, yet give its output."""
    torch.manual_seed(0)
    stock, _, _ = build_sam_parts(ARCHS["tiny"])
    torch.manual_seed(0)
    model = build_model("tiny", 3, method)
    _random_rel_pos(stock)
    # Same weights in both, random rel-pos tables included: copy the stock blocks into the wrapped ones.
    with torch.no_grad():
        for wrapped, blk in zip(model.image_encoder.blocks, stock.blocks, strict=True):
            assert isinstance(wrapped, PEFTBlock)
            for p, q in zip(wrapped.block.parameters(), blk.parameters(), strict=True):
                p.copy_(q)
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64)
    stock, encoder = stock.double(), model.image_encoder.double()
    with torch.no_grad():
        want, got = stock(x), encoder(x)
    assert (got - want).abs().max().item() < 1e-12
    assert ARCHS["tiny"].global_attn_indexes and ARCHS["tiny"].window_size  # both kinds of block ran


@pytest.mark.parametrize("index", [WINDOWED, GLOBAL])
@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_backends_equal_the_explicit_concat_softmax_reference(blocks, index, backend):
    """Windows, rel-pos, prefix keys and MoPEFT's logit gate: both backends give the explicit formula."""
    blk = copy.deepcopy(blocks[index]).double()
    prefix = DeepPrompt(5, C)
    _randomise(prefix)
    block = PEFTBlock(blk, prefix=prefix, gated=True, prefix_gate="logit").double()
    _set_gate(block.gates["prefix"], -0.7)
    x = _x().double()
    g = torch.sigmoid(torch.tensor(-0.7, dtype=torch.float64)).expand(2)
    with torch.no_grad(), attention_backend(backend):
        out = block(x)
        want = reference_block(blk, x, prefix=block.prefix(), prefix_logit=g)
    assert (out - want).abs().max().item() < 1e-12


def test_flex_equals_sdpa_with_prompt_rows_prefix_columns_and_rel_pos():
    """The attention function itself, with every bias part at once (shallow-VPT prompt rows too)."""
    torch.manual_seed(0)
    b, nh, n, d, length, prompts, hw = 2, 2, 16, 8, 3, 2, (4, 4)
    q = torch.randn(b, nh, prompts + n, d, dtype=torch.float64)
    k, v = (torch.randn(b, nh, length + n, d, dtype=torch.float64) for _ in range(2))
    rh, rw = (torch.randn(4, 4, d, dtype=torch.float64) for _ in range(2))
    bias = torch.randn(b, dtype=torch.float64)
    rel = rel_pos_terms(q[:, :, prompts:], rh, rw, hw)
    outs = {}
    for backend in ("sdpa", "flex"):
        with attention_backend(backend):
            outs[backend] = attention_ops.attention(q, k, v, rel, hw, bias, query_prefix=prompts)
    # Independent reference: explicit scores with the bias laid out by hand.
    scores = q @ k.transpose(-1, -2) * d**-0.5
    rel_h, rel_w = rel
    for i in range(n):
        for j in range(n):
            scores[:, :, prompts + i, length + j] += rel_h[:, :, i, j // 4] + rel_w[:, :, i, j % 4]
    scores[:, :, prompts:, :length] += bias.view(b, 1, 1, 1)
    want = scores.softmax(-1) @ v
    assert (outs["sdpa"] - want).abs().max() < 1e-12 and (outs["flex"] - want).abs().max() < 1e-12


def test_mask_is_one_aligned_allocation_equal_to_the_materialised_bias(blocks):
    blk = blocks[GLOBAL]
    q = torch.randn(3, 4, 36, 16)
    rel = block_rel_terms(q, blk, (6, 6))
    mask = attention_mask(q, rel, (6, 6), torch.tensor([0.5, -1.0, 2.0]), length=5)
    assert mask.shape == (3, 4, 36, 41)
    assert all(s % MASK_ALIGNMENT == 0 for s in mask.stride()[:-1]) and mask.stride(-1) == 1
    assert torch.allclose(mask[..., 5:], rel_pos_bias(q, blk, (6, 6)))
    assert torch.equal(mask[..., :5], torch.tensor([0.5, -1.0, 2.0]).view(3, 1, 1, 1).expand(3, 4, 36, 5))


def test_mask_gradient_reaches_the_rel_pos_tables_exactly():
    """Through SDPA, the mask's own backward gives the grads of the concatenated reference."""
    torch.manual_seed(1)
    q = torch.randn(2, 2, 16, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(2, 2, 19, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    rh, rw = (torch.randn(4, 4, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    out = attention_ops.attention(q, k, v, rel_pos_terms(q, rh, rw, (4, 4)), (4, 4))
    got = torch.autograd.grad(out.square().sum(), (q, k, v, rh, rw))
    rel_h, rel_w = rel_pos_terms(q, rh, rw, (4, 4))
    body = (rel_h[..., :, None] + rel_w[..., None, :]).reshape(2, 2, 16, 16)
    bias = torch.cat([q.new_zeros(2, 2, 16, 3), body], dim=-1)
    ref = ((q @ k.transpose(-1, -2)) * 8**-0.5 + bias).softmax(-1) @ v
    want = torch.autograd.grad(ref.square().sum(), (q, k, v, rh, rw))
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def _forbid_stock_attention(monkeypatch):
    def forbidden(self, x):
        raise AssertionError("SAM's stock Attention.forward ran")

    monkeypatch.setattr(type(Block(8, 2).attn), "forward", forbidden)  # SAM's image-encoder Attention


@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_attention_function_serves_every_method(method, monkeypatch):
    _forbid_stock_attention(monkeypatch)
    calls = []
    real = attention_ops.attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(attention_ops, "attention", counting)
    torch.manual_seed(0)
    model = build_model("tiny", 3, method)
    with torch.no_grad():
        model(torch.randn(1, 3, 96, 96))
    assert len(calls) == ARCHS["tiny"].depth  # once per encoder block, whatever the method


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", sorted(METHODS))
def test_inference_runs_no_explicit_softmax_inside_the_encoder(method):
    torch.manual_seed(0)
    model = build_model("tiny", 3, method).eval()
    with torch.no_grad(), _Ops() as ops:
        model.image_encoder(torch.randn(2, 3, 96, 96))
    assert not [op for op in ops.names if "softmax" in op], method
    assert any("scaled_dot_product" in op for op in ops.names)


# --- compiled FlexAttention: one Dynamo region per call signature, never the recompile limit ---


@pytest.fixture
def flex_compiled_on_cpu(monkeypatch):
    """The flex backend compiled on the CPU too, by a backend that records every Dynamo compile.

    The recorded graphs run eagerly: Dynamo's guards and recompiles do not depend on the backend. torch
    2.14 refuses flex backward on the CPU by a device check in front of its (device-agnostic) eager
    backward; the check is lifted so that train steps run here. Hitting the recompile limit raises.
    """
    import torch.nn.attention.flex_attention as flex_module

    compiles = []

    def recording_backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    monkeypatch.setitem(attention_ops.FLEX_COMPILE, "backend", recording_backend)
    monkeypatch.setitem(attention_ops.FLEX_COMPILE, "devices", ("cpu",))
    monkeypatch.setattr(attention_ops, "_flex_compiled", {})
    monkeypatch.setattr(flex_module, "_validate_device", lambda q, k, v: None)
    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
            yield compiles
    finally:
        torch._dynamo.reset()


def _train_step(model, images):
    model.train()
    model(images).square().mean().backward()


def _infer(model, images):
    model.eval()
    with torch.no_grad():
        return model(images)


def test_compiled_flex_compiles_each_signature_once_through_training_and_inference(flex_compiled_on_cpu):
    """`bench --methods lora,full_ft --attention flex` and a prefix method: train steps, then the
    deployed inference forms. More signatures than one shared cache may hold, none compiled twice."""
    from mopeft.measure.bench import deployed_forms

    images = torch.randn(2, 3, 96, 96)
    with attention_backend("flex"):
        for method in ("lora", "full_ft", "vpt_deep"):
            torch.manual_seed(0)
            model = build_model("tiny", 3, method)
            for _ in range(2):
                _train_step(model, images)
            forms, _ = deployed_forms(model)
            for form in forms.values():
                got = _infer(form, images)
                with attention_backend("sdpa"):
                    want = _infer(form, images)
                assert (got - want).abs().max().item() < 1e-4  # the compiled path computes the same
    signatures = attention_ops._flex_compiled
    assert len(flex_compiled_on_cpu) == len(signatures)  # each region compiled exactly once
    assert len(signatures) > torch._dynamo.config.recompile_limit  # one shared cache would have overflowed


def test_one_shared_compiled_flex_hits_the_recompile_limit(flex_compiled_on_cpu, monkeypatch):
    """The control: the previous single ``torch.compile(flex_attention, dynamic=False)`` shared by every
    call overflows in the same run (forward passes suffice: Dynamo's guards are all on the forward)."""
    from torch.nn.attention.flex_attention import flex_attention

    shared = torch.compile(flex_attention, dynamic=False, backend=attention_ops.FLEX_COMPILE["backend"])
    monkeypatch.setattr(attention_ops, "_compiled_flex", lambda signature: shared)
    images = torch.randn(2, 3, 96, 96)
    with attention_backend("flex"), pytest.raises(torch._dynamo.exc.FailOnRecompileLimitHit):
        for method in ("lora", "full_ft", "vpt_deep"):
            torch.manual_seed(0)
            model = build_model("tiny", 3, method)
            model.train()(images)
            _infer(model, images)
    assert len(flex_compiled_on_cpu) == torch._dynamo.config.recompile_limit


def test_flex_fallback_regions_are_distinct_code_objects_that_compute_flex():
    """Without torch.compile(isolate_recompiles=...) (an older torch), each signature compiles a copy
    of the wrapper under its own code object: Dynamo's cache and recompile limit are per code object."""
    from torch.nn.attention.flex_attention import flex_attention

    a, b = attention_ops._own_code_object(0), attention_ops._own_code_object(1)
    assert a.__code__ is not b.__code__ and a.__code__ is not attention_ops._flex_call.__code__
    q, k, v = (torch.randn(1, 2, 8, 4, dtype=torch.float64) for _ in range(3))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(a(q, k, v), flex_attention(q, k, v))
