"""Methods registry: exact trainable sets, frozen weights untouched by optimisation, options, checkpoints."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from mopeft.methods import METHODS, get_method
from mopeft.methods.build import build_model
from mopeft.peft.state import load_trainable_state_dict, trainable_state_dict

DEC = r"mask_decoder\..*"
BLK = r"image_encoder\.blocks\.\d+\."
LORA = BLK + r"lora\.[ab]_[qv]\.weight"
PREFIX = BLK + r"prefix\.reparam\.(embedding\.weight|mlp\.[02]\.(weight|bias))"
ADAPTER = BLK + r"adapter\.(down|up)\.(weight|bias)"
GATES = BLK + r"gates\.(lora_q|lora_v|prefix|adapter)\.linear\.(weight|bias)"
TRAINABLE = {
    "baseline": r"mask_decoder\.(class_tokens\.weight|hypernetwork\..*)",
    "decoder_ft": DEC,
    "full_ft": r"(image_encoder|mask_decoder)\..*",
    "lora": f"{DEC}|{LORA}",
    "vpt": rf"{DEC}|image_encoder\.prompts\.tokens",
    "vpt_deep": f"{DEC}|{PREFIX}",
    "adapter": f"{DEC}|{ADAPTER}",
    "mopeft": f"{DEC}|{LORA}|{PREFIX}|{ADAPTER}|{GATES}",
}
# Encoder PEFT parameters per block for the tiny arch (C = 64), from the formulas:
# LoRA 4rC, prefix reparam L*C + (C*h + h) + (h*C + C), adapter (2C+1)D + C, gates 4 (C + 1).
C, R, L, H, D = 64, 8, 20, 512, 64
PER_BLOCK = {
    "lora": 4 * R * C,
    "vpt_deep": L * C + C * H + H + H * C + C,
    "adapter": (2 * C + 1) * D + C,
    "mopeft": 4 * R * C + L * C + C * H + H + H * C + C + (2 * C + 1) * D + C + 4 * (C + 1),
}


def test_registry_names_and_defaults():
    assert list(METHODS) == [
        "baseline",
        "decoder_ft",
        "full_ft",
        "lora",
        "vpt",
        "vpt_deep",
        "adapter",
        "mopeft",
        "mopeft_logit",
    ]
    assert METHODS["lora"].defaults == {"r": 8, "alpha": None}  # alpha = r: scaling 1 at any rank
    assert METHODS["vpt"].defaults == {"length": 20}
    assert METHODS["adapter"].defaults == {"dmid": 64}
    assert METHODS["mopeft"].defaults["prefix_gate"] == "scale"  # the study's gate
    assert METHODS["mopeft_logit"].defaults == {**METHODS["mopeft"].defaults, "prefix_gate": "logit"}


def test_lora_scaling_is_one_at_any_rank_unless_alpha_is_given():
    """`--set r=16` used to halve the update (alpha fixed at 8); alpha now defaults to r."""
    from mopeft.methods.registry import method_spec

    for r in ("4", "16"):
        model = build_model("tiny", 2, "lora", method_spec("lora").options({"r": r}))
        assert {blk.lora.scaling for blk in model.image_encoder.blocks} == {1.0}
    model = build_model("tiny", 2, "lora", method_spec("lora").options({"r": "16", "alpha": "8"}))
    assert {blk.lora.scaling for blk in model.image_encoder.blocks} == {0.5}


@pytest.mark.parametrize("method", list(TRAINABLE))
def test_requires_grad_audit_and_adam_step(method):
    torch.manual_seed(0)
    model = build_model("tiny", 3, method)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if re.fullmatch(TRAINABLE[method], n)}
    assert names == expected and names
    assert not any(n.startswith("prompt_encoder") for n in names)
    if method in PER_BLOCK:
        enc = sum(
            p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith("image_")
        )
        assert enc == 4 * PER_BLOCK[method]

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(2, 3, 96, 96), torch.randint(0, 3, (2, 24, 24))
    y[0, :4] = 255
    for _ in range(2):  # zero-initialised B / W_up get a gradient first, their partners on step 2
        opt.zero_grad()
        F.cross_entropy(model(x), y, ignore_index=255).backward()
        opt.step()
    for n, p in model.named_parameters():
        if n in names:
            if n.endswith("k_proj.bias"):  # softmax is shift-invariant over keys: its gradient is exactly 0
                continue
            assert not torch.equal(p, before[n]), f"{method}: trainable {n} did not change"
        else:
            assert torch.equal(p, before[n]), f"{method}: frozen {n} changed"


def test_options_validation_and_coercion():
    model = build_model("tiny", 2, "lora", {"r": "4", "alpha": "16"})
    assert model.method_options == {"r": 4, "alpha": 16.0}
    assert model.image_encoder.blocks[0].lora.scaling == 4.0
    with pytest.raises(ValueError, match="unknown option"):
        build_model("tiny", 2, "lora", {"rank": 4})
    with pytest.raises(ValueError, match="not a int"):
        build_model("tiny", 2, "adapter", {"dmid": "big"})
    with pytest.raises(ValueError, match="prefix_gate"):
        build_model("tiny", 2, "mopeft", {"prefix_gate": "nope"})
    with pytest.raises(ValueError, match="already applied"):
        get_method("lora").apply(model, {})
    with pytest.raises(ValueError, match="unknown method"):
        build_model("tiny", 2, "loraa")


def test_trainable_state_dict_roundtrip_and_unknown_key():
    torch.manual_seed(0)
    model = build_model("tiny", 3, "mopeft").eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    state = trainable_state_dict(model)
    assert set(state) == {n for n, p in model.named_parameters() if p.requires_grad}
    torch.manual_seed(0)
    fresh = build_model("tiny", 3, "mopeft").eval()
    load_trainable_state_dict(fresh, state)
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    with pytest.raises(ValueError, match="unknown keys"):
        load_trainable_state_dict(fresh, {**state, "image_encoder.bogus": torch.zeros(1)}, source="ck.pt")
    assert (fresh.method, fresh.num_classes, fresh.image_size, fresh.arch) == ("mopeft", 3, 96, "tiny")


def test_load_trainable_state_dict_rejects_missing_trainable_tensors():
    # A partial checkpoint must not leave some trainable tensors at their fresh initial values.
    torch.manual_seed(0)
    model = build_model("tiny", 3, "mopeft")
    state = trainable_state_dict(model)
    dropped = next(k for k in state if ".gates." in k)
    del state[dropped]
    with pytest.raises(ValueError, match="missing trainable"):
        load_trainable_state_dict(build_model("tiny", 3, "mopeft"), state, source="ck.pt")


def test_mopeft_uses_the_studys_scaled_prefix_gate_and_mopeft_logit_the_logit_one():
    for method, gate in (("mopeft", "scale"), ("mopeft_logit", "logit")):
        model = build_model("tiny", 2, method)
        assert {blk.prefix_gate for blk in model.image_encoder.blocks} == {gate}
