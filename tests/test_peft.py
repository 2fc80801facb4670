"""PEFT blocks against explicit references built from segment_anything's own functions (tiny arch)."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.image_encoder import (
    add_decomposed_rel_pos,
    window_partition,
    window_unpartition,
)

from mopeft.methods.build import build_model
from mopeft.peft.adapter import Adapter
from mopeft.peft.block import PEFTBlock
from mopeft.peft.lora import LoRAQV
from mopeft.peft.prefix import DeepPrompt
from mopeft.peft.recorder import GateRecorder
from mopeft.peft.shallow_vpt import prompted_block
from mopeft.peft.state import fold_prefixes, load_trainable_state_dict, trainable_state_dict

C = 64
WINDOWED, GLOBAL = 0, 1  # tiny: blocks 1 and 3 are global, window 4 pads the 6x6 grid to 8x8


def _x(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 6, 6, C, generator=g)


def _randomise(*modules):
    torch.manual_seed(3)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                p.normal_(0, 0.2)


def reference_block(
    blk, x, lora=None, scaling=1.0, prefix=None, prefix_logit=None, prefix_scale=None, adapter=None
):
    """Explicit SAM block: concat prefix keys, SAM's add_decomposed_rel_pos on the patch part, softmax.

    prefix_logit / prefix_scale: per-image tensors (B,) applied to the prefix columns / prefix K,V.
    """
    attn_mod = blk.attn
    b, height, width, c = x.shape
    h = blk.norm1(x)
    ws = blk.window_size
    if ws > 0:
        h, pad = window_partition(h, ws)
    bw, gh, gw, _ = h.shape
    n, nh, d = gh * gw, attn_mod.num_heads, c // attn_mod.num_heads
    n_win = bw // b
    t = h.reshape(bw, n, c)
    w, bias = attn_mod.qkv.weight, attn_mod.qkv.bias
    q = t @ w[:c].T + bias[:c]
    k = t @ w[c : 2 * c].T + bias[c : 2 * c]
    v = t @ w[2 * c :].T + bias[2 * c :]
    if lora is not None:
        q = q + scaling * (t @ lora.a_q.weight.T @ lora.b_q.weight.T)
        v = v + scaling * (t @ lora.a_v.weight.T @ lora.b_v.weight.T)

    def split(z, rows):
        return z.reshape(-1, rows, nh, d).permute(0, 2, 1, 3).reshape(-1, rows, d)

    q, k, v = split(q, n), split(k, n), split(v, n)
    scores = (q * d**-0.5) @ k.transpose(1, 2)
    scores = add_decomposed_rel_pos(scores, q, attn_mod.rel_pos_h, attn_mod.rel_pos_w, (gh, gw), (gh, gw))
    if prefix is not None:
        p = blk.norm1(prefix)
        length = p.shape[0]
        pk = p @ w[c : 2 * c].T + bias[c : 2 * c]
        pv = p @ w[2 * c :].T + bias[2 * c :]
        pk = split(pk[None], length).repeat(bw, 1, 1)  # (bw*nh, L, d), same prefix in every window
        pv = split(pv[None], length).repeat(bw, 1, 1)
        if prefix_scale is not None:
            s = prefix_scale.repeat_interleave(n_win * nh)[:, None, None]
            pk, pv = s * pk, s * pv
        pscores = (q * d**-0.5) @ pk.transpose(1, 2)
        if prefix_logit is not None:
            pscores = pscores + torch.log(prefix_logit).repeat_interleave(n_win * nh)[:, None, None]
        scores = torch.cat([pscores, scores], dim=-1)
        v = torch.cat([pv, v], dim=1)
    out = scores.softmax(-1) @ v
    out = out.reshape(bw, nh, gh, gw, d).permute(0, 2, 3, 1, 4).reshape(bw, gh, gw, c)
    out = attn_mod.proj(out)
    if ws > 0:
        out = window_unpartition(out, ws, pad, (height, width))
    x = x + out
    z = x + blk.mlp(blk.norm2(x))
    if adapter is not None:
        z = z + adapter.up(torch.relu(adapter.down(z)))
    return z


def _set_gate(gate, value_logit):
    with torch.no_grad():
        gate.linear.weight.zero_()
        gate.linear.bias.fill_(value_logit)


@pytest.mark.parametrize("index", [WINDOWED, GLOBAL])
def test_identity_at_init(blocks, index):
    blk, x = blocks[index], _x()
    ref = blk(x)
    plain = PEFTBlock(blk, lora=LoRAQV(C, 4), adapter=Adapter(C, 8))
    assert torch.allclose(plain(x), ref, atol=1e-5)
    gated = PEFTBlock(blk, LoRAQV(C, 4), DeepPrompt(5, C), Adapter(C, 8), gated=True, prefix_gate="logit")
    _set_gate(gated.gates["prefix"], -1e4)  # G_P -> 0 removes the prefix exactly
    assert torch.allclose(gated(x), ref, atol=1e-5)


@pytest.mark.parametrize("index", [WINDOWED, GLOBAL])
def test_prefix_lora_adapter_match_explicit_reference(blocks, index):
    blk, x = blocks[index], _x()
    lora, prefix, adapter = LoRAQV(C, 4, alpha=8), DeepPrompt(5, C), Adapter(C, 8)
    _randomise(lora, prefix, adapter)
    got = PEFTBlock(blk, lora, prefix, adapter)(x)
    want = reference_block(blk, x, lora, 2.0, prefix(), adapter=adapter)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, blk(x), atol=1e-3)  # the reference is not trivially the frozen block


@pytest.mark.parametrize("index", [WINDOWED, GLOBAL])
def test_logit_prefix_gate(blocks, index):
    blk, x = blocks[index], _x()
    prefix = DeepPrompt(5, C)
    _randomise(prefix)
    gated = PEFTBlock(blk, prefix=prefix, gated=True, prefix_gate="logit")
    _set_gate(gated.gates["prefix"], 1e4)  # G_P = 1 -> ungated prefix
    assert torch.allclose(gated(x), PEFTBlock(blk, prefix=prefix)(x), atol=1e-6)
    _set_gate(gated.gates["prefix"], -1e4)  # G_P -> 0 -> no prefix at all
    assert torch.allclose(gated(x), blk(x), atol=1e-5)
    _set_gate(gated.gates["prefix"], -0.7)  # intermediate: log G_P added to the prefix logits
    g = torch.sigmoid(torch.tensor(-0.7)).expand(2)
    assert torch.allclose(gated(x), reference_block(blk, x, prefix=prefix(), prefix_logit=g), atol=1e-5)


def test_scale_prefix_gate_is_unipelt_and_never_fully_off(blocks):
    blk, x = blocks[GLOBAL], _x()
    prefix = DeepPrompt(5, C)
    _randomise(prefix)
    gated = PEFTBlock(blk, prefix=prefix, gated=True, prefix_gate="scale")
    _set_gate(gated.gates["prefix"], 0.4)
    g = torch.sigmoid(torch.tensor(0.4)).expand(2)
    assert torch.allclose(gated(x), reference_block(blk, x, prefix=prefix(), prefix_scale=g), atol=1e-5)
    _set_gate(gated.gates["prefix"], -1e4)  # G_P = 0 leaves zero keys that still take softmax mass
    assert (gated(x) - blk(x)).abs().max() > 1e-4


def test_gates_shape_range_and_formula(blocks):
    blk, x = blocks[WINDOWED], _x(3)
    block = PEFTBlock(blk, LoRAQV(C, 4), DeepPrompt(5, C), Adapter(C, 8), gated=True)
    block(x)
    assert set(block.last_gates) == {"lora_q", "lora_v", "prefix", "adapter"}
    h = blk.norm1(x)  # un-partitioned tokens (no window padding enters the mean)
    for name, g in block.last_gates.items():
        assert g.shape == (3,)
        assert ((g > 0) & (g < 1)).all() and (g - 0.5).abs().max() < 0.05
        if name != "adapter":
            lin = block.gates[name].linear
            want = torch.sigmoid(h @ lin.weight[0] + lin.bias[0]).mean(dim=(1, 2))
            assert torch.allclose(g, want, atol=1e-6)


def _randomised_model(method):
    torch.manual_seed(0)
    model = build_model(
        "tiny", 3, method, {"reparam_hidden": 16} if method in ("mopeft", "vpt_deep") else None
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and "mask_decoder" not in name:
                p.normal_(0, 0.1)
    return model.eval()


def test_batch_independence_outputs_and_gates():
    model = _randomised_model("mopeft")
    x = torch.randn(3, 3, 96, 96)
    x2 = x.clone()
    x2[1] += torch.randn(3, 96, 96)
    with torch.no_grad(), GateRecorder(model) as rec:
        a, b = model(x), model(x2)
    vals = rec.values()
    assert torch.allclose(a[[0, 2]], b[[0, 2]], atol=1e-5)
    assert not torch.allclose(a[1], b[1], atol=1e-3)
    for g in vals.values():  # rows 0..2 = first call, 3..5 = second call
        assert g.shape == (6, 4)
        assert abs(g[[0, 2]] - g[[3, 5]]).max() < 1e-6 and abs(g[1] - g[4]).max() > 1e-6


def test_gate_recorder_rows_and_layers():
    model = _randomised_model("mopeft")
    with torch.no_grad(), GateRecorder(model) as rec:
        model(torch.randn(2, 3, 96, 96))
        model(torch.randn(1, 3, 96, 96))
        last = [blk.last_gates for blk in model.image_encoder.blocks]
    vals = rec.values()
    assert set(vals) == {"lora_q", "lora_v", "prefix", "adapter"}
    for name, arr in vals.items():
        assert arr.shape == (3, 4)
        assert abs(arr[2] - torch.stack([g[name][0] for g in last]).numpy()).max() == 0
    with GateRecorder(build_model("tiny", 3, "lora")) as rec2:
        pass
    assert rec2.values() == {}


def test_lora_and_adapter_formulas():
    torch.manual_seed(0)
    lora = LoRAQV(C, 4, alpha=12)
    assert lora.scaling == 3.0 and lora.b_q.weight.abs().sum() == 0 and lora.a_q.weight.abs().sum() > 0
    _randomise(lora)
    h = torch.randn(5, C)
    dq, dv = lora(h)  # alpha / r = 3 by default
    assert torch.allclose(dq, 3.0 * h @ (lora.b_q.weight @ lora.a_q.weight).T, atol=1e-5)
    assert torch.allclose(dv, 3.0 * h @ (lora.b_v.weight @ lora.a_v.weight).T, atol=1e-5)
    g_q, g_v = torch.rand(5, 1), torch.rand(5, 1)  # a MoPEFT gate per row replaces alpha / r
    dq, dv = lora(h, g_q, g_v)
    assert torch.allclose(dq, g_q * (h @ (lora.b_q.weight @ lora.a_q.weight).T), atol=1e-6)
    assert torch.allclose(dv, g_v * (h @ (lora.b_v.weight @ lora.a_v.weight).T), atol=1e-6)
    ad = Adapter(C, 8)
    assert ad(h).abs().max() == 0
    assert sum(p.numel() for p in ad.parameters()) == (2 * C + 1) * 8 + C


def _shallow_reference(blk, x, p):
    """KMnP/VPT by hand: prompts in every window, rel-pos on patch x patch only, window-mean of prompts."""
    attn_mod = blk.attn
    b, height, width, c = x.shape
    length, nh = p.shape[1], attn_mod.num_heads
    d = c // nh
    h = blk.norm1(x)
    ws = blk.window_size
    if ws > 0:
        h, pad = window_partition(h, ws)
    bw, gh, gw, _ = h.shape
    n_win = bw // b
    outs_x, outs_p = [], []
    for i in range(bw):
        seq = torch.cat([blk.norm1(p[i // n_win]), h[i].reshape(-1, c)])
        q, k, v = attn_mod.qkv(seq).reshape(-1, 3, nh, d).permute(1, 2, 0, 3)
        s = (q * d**-0.5) @ k.transpose(1, 2)
        s[:, length:, length:] = add_decomposed_rel_pos(
            s[:, length:, length:], q[:, length:], attn_mod.rel_pos_h, attn_mod.rel_pos_w, (gh, gw), (gh, gw)
        )
        o = attn_mod.proj((s.softmax(-1) @ v).transpose(0, 1).reshape(-1, c))
        outs_p.append(o[:length])
        outs_x.append(o[length:].reshape(gh, gw, c))
    ox = torch.stack(outs_x)
    if ws > 0:
        ox = window_unpartition(ox, ws, pad, (height, width))
    op = torch.stack([torch.stack(outs_p[j * n_win : (j + 1) * n_win]).mean(0) for j in range(b)])
    x, p = x + ox, p + op
    return x + blk.mlp(blk.norm2(x)), p + blk.mlp(blk.norm2(p))


@pytest.mark.parametrize("index", [WINDOWED, GLOBAL])
def test_shallow_vpt_block_matches_per_window_reference(blocks, index):
    blk, x = blocks[index], _x()
    p = torch.randn(2, 3, C)
    gx, gp = prompted_block(blk, x, p)
    wx, wp = _shallow_reference(blk, x, p)
    assert torch.allclose(gx, wx, atol=1e-5) and torch.allclose(gp, wp, atol=1e-5)


def test_vpt_deep_fold_preserves_outputs_and_roundtrips():
    model = _randomised_model("vpt_deep")
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        before = model(x)
        assert fold_prefixes(model) == 4
        after = model(x)
    assert torch.equal(before, after)
    state = trainable_state_dict(model)
    assert sum(k.endswith("prefix.folded_tokens") for k in state) == 4
    assert not any(".reparam." in k for k in state)
    torch.manual_seed(0)  # same frozen (random) SAM weights, as a real checkpoint would give
    fresh = build_model("tiny", 3, "vpt_deep", {"reparam_hidden": 16})
    load_trainable_state_dict(fresh, state)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), after)


def test_logit_prefix_gate_keeps_attn_mask_in_query_dtype(blocks, monkeypatch):
    # CUDA autocast runs torch.log in fp32 while q/k/v are bf16; simulate that policy on the CPU
    # with a bf16 block and check that SDPA gets an attn_mask of q's dtype (no fp32 promotion).
    import copy

    import torch.nn.functional as F

    torch.manual_seed(0)
    base = copy.deepcopy(blocks[GLOBAL])  # the module fixture stays fp32
    blk = PEFTBlock(base, prefix=DeepPrompt(3, C), gated=True, prefix_gate="logit").to(torch.bfloat16)
    log = torch.log
    monkeypatch.setattr(torch, "log", lambda t: log(t.float()))
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kw):
        seen.append((q.dtype, attn_mask.dtype))
        return sdpa(q, k, v, attn_mask=attn_mask, **kw)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        out = blk(_x().to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert seen == [(torch.bfloat16, torch.bfloat16)]


def test_gates_are_computed_in_fp32_under_bf16_autocast():
    from mopeft.peft.gates import TokenMeanGate

    gate = TokenMeanGate(16)
    x = torch.randn(2, 5, 5, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gate(x)
    assert g.dtype == torch.float32
    assert torch.allclose(g, gate(x), atol=1e-7)  # same value as outside autocast


def test_stacked_gate_projection_equals_each_gate_and_its_gradients():
    """MoPEFT's attention-side gates share one projection (gate_values); each keeps its own
    parameters, values and gradients (fp64), and the values stay fp32 under bf16 autocast."""
    from mopeft.peft.gates import TokenMeanGate, gate_values

    torch.manual_seed(0)
    gates = [TokenMeanGate(16).double() for _ in range(3)]
    for g in gates:
        torch.nn.init.normal_(g.linear.weight, std=0.5)
        torch.nn.init.normal_(g.linear.bias)
    x = torch.randn(2, 5, 7, 16, dtype=torch.float64)
    stacked = gate_values(gates, x)
    single = [torch.sigmoid(x @ g.linear.weight[0] + g.linear.bias[0]).mean(dim=(1, 2)) for g in gates]
    weights = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    grads = []
    for values in (stacked, single):
        for g in gates:
            g.zero_grad()
        sum(w * v.square().sum() for w, v in zip(weights, values, strict=True)).backward()
        grads.append([(g.linear.weight.grad.clone(), g.linear.bias.grad.clone()) for g in gates])
    for a, b in zip(stacked, single, strict=True):
        assert a.shape == (2,) and torch.allclose(a, b, atol=1e-14, rtol=0)
    for (wa, ba), (wb, bb) in zip(*grads, strict=True):
        assert torch.allclose(wa, wb, atol=1e-14, rtol=0) and torch.allclose(ba, bb, atol=1e-14, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert all(v.dtype == torch.float32 for v in gate_values([g.float() for g in gates], x.float()))
