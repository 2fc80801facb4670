"""merge_lora: the merged model computes what the unmerged one does (fp64), and gated LoRA is refused."""

from __future__ import annotations

import pytest
import torch

from mopeft.methods.build import build_model
from mopeft.peft.block import PEFTBlock
from mopeft.peft.merge import merge_lora


def _model(method: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny", 3, method, options).double().eval()
    with torch.no_grad():
        for blk in model.image_encoder.blocks:
            if isinstance(blk, PEFTBlock) and blk.lora is not None:
                # B starts at zero (the update would vanish); distinct values for q and v make a
                # swapped row block or a dropped scaling visible.
                for lin in (blk.lora.b_q, blk.lora.b_v, blk.lora.a_q, blk.lora.a_v):
                    lin.weight.normal_(0, 0.3)
            attn = blk.block.attn if isinstance(blk, PEFTBlock) else blk.attn
            attn.rel_pos_h.normal_(0, 0.3)  # SAM zero-inits rel-pos: random tables make it matter
            attn.rel_pos_w.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("alpha", [8.0, 20.0])  # scaling 1 and 2.5 (r = 8)
def test_merged_equals_unmerged_fp64(alpha):
    model = _model("lora", r=8, alpha=alpha)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        before = model.image_encoder(x)  # merging only touches the encoder
        qkv_before = [blk.block.attn.qkv.weight for blk in model.image_encoder.blocks]
        assert merge_lora(model) == 4
        after = model.image_encoder(x)
    assert all(blk.lora is None for blk in model.image_encoder.blocks)
    assert not any("lora" in name for name, _ in model.named_parameters())
    # the update really moved the weights, in new tensors (shared originals stay untouched)
    for blk, old in zip(model.image_encoder.blocks, qkv_before, strict=True):
        new = blk.block.attn.qkv.weight
        assert new is not old and not torch.equal(new, old)
        c = new.shape[1]
        torch.testing.assert_close(new[c : 2 * c], old[c : 2 * c], rtol=0, atol=0)  # k rows unchanged
    torch.testing.assert_close(after, before, rtol=1e-10, atol=1e-10)
    assert before.abs().max() > 1e-3  # a meaningful output, not all zeros


def test_model_without_lora_is_left_alone():
    model = _model("vpt_deep")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert merge_lora(model) == 0
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_gated_lora_is_refused_and_model_unchanged():
    model = _model("mopeft")
    with pytest.raises(ValueError, match="gate"):
        merge_lora(model)
    assert all(blk.lora is not None for blk in model.image_encoder.blocks)
