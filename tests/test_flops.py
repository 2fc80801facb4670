"""FLOP counting: the SDPA handle, exact einsum, loud failure on uncounted ops, and the tiny SAM
encoder against an independent analytic count (ViT-B: 486.42 GMAC, docs/performance.md)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mopeft.cli import main
from mopeft.measure.flops import UncountedOpError, count_macs, einsum_macs
from mopeft.model.arch import ARCHS


def sam_encoder_macs(spec, size: int) -> int:
    """Hand count of SAM's ImageEncoderViT (stock attention, batch 1), in fvcore's convention:
    matmuls/linears/convs as MACs, LayerNorm = 5·numel, elementwise ops not counted."""
    g = size // spec.patch_size
    t, dim, heads = g * g, spec.embed_dim, spec.num_heads
    d = dim // heads
    macs = 3 * spec.patch_size**2 * dim * t  # patch embedding conv
    macs += t * dim * spec.prompt_dim + t * spec.prompt_dim**2 * 9  # neck 1x1 + 3x3 convs
    for i in range(spec.depth):
        if i in spec.global_attn_indexes:
            side, windows = g, 1
        else:
            side = spec.window_size
            windows = math.ceil(g / side) ** 2  # padded to whole windows
        n = side * side  # tokens per attention window
        tp = windows * n  # tokens after padding
        macs += tp * dim * 3 * dim + tp * dim * dim  # qkv + proj (on padded tokens)
        macs += windows * heads * n * n * d * 2  # q·kᵀ and attn·v
        macs += 2 * windows * heads * n * side * d  # decomposed rel-pos einsums (rel_h, rel_w)
        macs += 2 * t * dim * 4 * dim  # MLP
        macs += 2 * t * dim * 5  # two LayerNorms
    return macs


def test_analytic_formula_reproduces_published_vit_b_figure():
    # fvcore's ViT-B encoder @1024 = 486.42 GMAC (8 windowed x 32.50 + 4 global x 55.19 + ...)
    # (`mopeft flops --arch vit_b --method baseline --image-size 1024` traced exactly this integer)
    assert sam_encoder_macs(ARCHS["vit_b"], 1024) == 486_416_154_624
    assert sam_encoder_macs(ARCHS["vit_b"], 1024) / 1e9 == pytest.approx(486.42, abs=0.01)


class StockAttention(nn.Module):
    def forward(self, q, k, v):
        return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1) @ v


class SdpaAttention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_matches_hand_count_and_stock_attention():
    b, h, nq, nk, dqk, dv = 2, 3, 5, 7, 4, 6
    q, k, v = torch.randn(b, h, nq, dqk), torch.randn(b, h, nk, dqk), torch.randn(b, h, nk, dv)
    hand = b * h * nq * nk * (dqk + dv)  # QKᵀ: b·h·nq·nk·dqk, attn·V: b·h·nq·nk·dv
    assert hand == 2100
    sdpa = count_macs(SdpaAttention(), (q, k, v))
    stock = count_macs(StockAttention(), (q, k, v))  # independent: fvcore's own matmul handle
    assert sdpa.total == hand == stock.total
    assert sdpa.by_operator[""] == {"scaled_dot_product_attention": hand}


def test_einsum_exact():
    assert einsum_macs("bhwc,hkc->bhwk", [[16, 4, 4, 16], [4, 4, 16]]) == 16 * 4 * 4 * 16 * 4
    x = torch.randn(16, 4, 4, 16)
    r = torch.randn(4, 4, 16)

    class RelPos(nn.Module):
        def forward(self, a, b):
            return torch.einsum("bhwc,hkc->bhwk", a, b)

    # fvcore's generic einsum path would give 16385 (numpy prints 3.277e+04); ours is exact
    assert count_macs(RelPos(), (x, r)).total == 16384


def test_unknown_arithmetic_op_fails_loudly():
    class Weird(nn.Module):
        def forward(self, a, b):
            return torch.cdist(a, b).sum()

    with pytest.raises(UncountedOpError, match="aten::cdist"):
        count_macs(Weird(), (torch.randn(4, 3), torch.randn(5, 3)))


def test_elementwise_ops_are_listed_not_counted():
    class Elementwise(nn.Module):
        def forward(self, a):
            return torch.sigmoid(a * 2 + 1)

    rep = count_macs(Elementwise(), (torch.randn(8, 8),))
    assert rep.total == 0
    assert set(rep.uncounted_elementwise_ops) == {"aten::mul", "aten::add", "aten::sigmoid"}


def test_cli_tiny_baseline_encoder_equals_hand_count(capsys):
    spec = ARCHS["tiny"]
    rc = main(["flops", "--arch", "tiny", "--method", "baseline", "--image-size", "96", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    res = json.loads(out)
    assert "multiply-add" in res["unit"] and "GMAC" in res["unit"]
    assert res["macs"]["image_encoder"] == sam_encoder_macs(spec, 96) == 10_977_280
    assert res["image_encoder_gmac"] == pytest.approx(0.010977, abs=1e-6)
    assert res["mask_decoder_gmac"] > 0
    parts = res["image_encoder_gmac"] + res["mask_decoder_gmac"] + res["prompt_encoder_gmac"]
    assert res["total_gmac"] == pytest.approx(parts, abs=1e-3)


@pytest.mark.parametrize("method", ["lora", "vpt", "vpt_deep", "adapter", "mopeft"])
def test_every_peft_method_traces_with_all_ops_classified(method):
    from mopeft.measure.flops import model_flops

    base = sam_encoder_macs(ARCHS["tiny"], 96)
    res = model_flops("tiny", method, {}, 96)
    # PEFT modules only add work to the encoder; uncounted ops would have raised
    assert res["image_encoder_gmac"] * 1e9 > base


def test_one_unit_wording_in_every_help_text_and_output(capsys):
    """`mopeft flops` (fvcore, GMAC: Table 4.5) and `mopeft bench` (FlopCounterMode, GFLOP: MFU) state
    the same conversion in the same words, and neither calls a multiply-add a FLOP."""
    from mopeft.commands import bench as bench_cmd
    from mopeft.commands import flops as flops_cmd
    from mopeft.measure.bench import FLOPS_NOTE
    from mopeft.measure.flops import MAC_IS_2_FLOP, UNIT

    assert MAC_IS_2_FLOP == "1 multiply-add (MAC) = 2 FLOP"
    texts = {"flops HELP": flops_cmd.HELP, "bench HELP": bench_cmd.HELP, "UNIT": UNIT}
    texts["FLOPS_NOTE"] = FLOPS_NOTE
    for command in ("flops", "bench"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts[f"{command} --help"] = " ".join(capsys.readouterr().out.split())
    for where, text in texts.items():
        assert MAC_IS_2_FLOP in text, where
        assert "FLOPs (fvcore GMAC)" not in text and "count FLOPs" not in text, where
    assert "GMAC" in flops_cmd.HELP and "GMAC" in UNIT  # the table's unit
    assert "twice the GMAC of `mopeft flops`" in FLOPS_NOTE
