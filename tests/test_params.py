"""Exact parameter counts for SAM ViT-B (built on the meta device: no weights, no memory) and the CLI."""

from __future__ import annotations

import json

import pytest

from mopeft.cli import main
from mopeft.measure.params import method_parameter_counts
from mopeft.methods.registry import METHOD_SPECS

C, BLOCKS = 768, 12


@pytest.fixture(scope="module")
def vit_b():
    return {
        m: method_parameter_counts("vit_b", m, num_classes=5)
        for m in ("baseline", "decoder_ft", "full_ft", "lora", "vpt", "vpt_deep", "adapter", "mopeft")
    }


def test_study_counts(vit_b):
    assert vit_b["lora"]["encoder_peft"] == 294_912 == BLOCKS * 4 * 8 * C
    assert vit_b["vpt_deep"]["prefix_folded"] == 184_320 == BLOCKS * 20 * C
    assert vit_b["vpt_deep"]["encoder_peft"] == 184_320
    assert vit_b["adapter"]["encoder_peft"] == 1_189_632 == BLOCKS * ((2 * C + 1) * 64 + C)
    assert vit_b["mopeft"]["gates"] == 36_912 == BLOCKS * 4 * (C + 1)
    assert vit_b["vpt"]["encoder_peft"] == 15_360
    assert vit_b["mopeft"]["encoder_peft_plus_gates"] == 1_705_776
    assert vit_b["baseline"]["sam_reference_total"] == 93_735_472


def test_head_and_reparam_counts(vit_b):
    # class tokens + the shared hypernetwork MLP(256 -> 256 -> 256 -> 32) they read out through
    assert vit_b["baseline"]["trainable"] == 5 * 256 + (256 * 256 + 256) * 2 + 256 * 32 + 32
    dec = vit_b["decoder_ft"]["trainable"]
    # SAM decoder minus its 4 mask tokens, 3 of 4 hypernetwork MLPs and the IoU head, plus K class tokens
    assert dec == 4_058_340 - 4 * 256 - 3 * 139_808 - 132_612 + 5 * 256 == 3_505_280 + 5 * 256
    for m in ("lora", "vpt", "vpt_deep", "adapter", "mopeft"):
        assert vit_b[m]["decoder_trainable"] == dec
    # per-layer reparam: Emb(20, C) + Linear(C, 512) + Linear(512, C)
    reparam = BLOCKS * (20 * C + C * 512 + 512 + 512 * C + C)
    assert vit_b["vpt_deep"]["encoder_peft_training_only_reparam"] == reparam == 9_636_864
    assert vit_b["vpt_deep"]["trainable_deployed"] == dec + 184_320
    assert vit_b["mopeft"]["trainable_deployed"] == dec + 1_705_776
    assert vit_b["full_ft"]["trainable"] == vit_b["full_ft"]["total"] - 6_220  # all but the prompt encoder


def test_options_change_counts():
    assert method_parameter_counts("vit_b", "lora", {"r": 4})["encoder_peft"] == 147_456
    direct = method_parameter_counts("vit_b", "vpt_deep", {"reparam_hidden": 0})
    assert (
        direct["trainable_by_role"]["prefix"] == 184_320 and direct["encoder_peft_training_only_reparam"] == 0
    )


def test_cli_params_and_methods(capsys):
    assert (
        main(
            ["params", "--arch", "tiny", "--method", "lora", "--set", "r=2", "--num-classes", "4", "--json"]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["encoder_peft"] == 4 * 4 * 2 * 64 and out["method_options"]["r"] == 2
    assert main(["methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["mopeft"]["defaults"]["dmid"] == 64 and list(listed) == sorted(METHOD_SPECS)
    assert main(["params", "--arch", "tiny", "--method", "lora", "--set", "r"]) == 2
