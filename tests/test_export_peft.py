"""`mopeft export --format peft`: a plain LoRA model becomes an HF peft adapter of segment-anything's
image encoder that peft itself loads, and the encoder with it computes what the trained encoder
computes (fp64, to rounding)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from mopeft.cli import main
from mopeft.methods.build import build_model
from mopeft.methods.checkpoint import model_config, save_model
from mopeft.methods.export_peft import ADAPTER_CONFIG, ADAPTER_WEIGHTS, DECODER_FILE, DECODER_FORMAT
from mopeft.peft.state import trainable_state_dict

peft = pytest.importorskip("peft")
image_encoder = pytest.importorskip("segment_anything.modeling.image_encoder")

R, ALPHA = 2, 3.0


def _stock_encoder() -> torch.nn.Module:
    """segment-anything's own encoder with the tiny arch's hyper-parameters, written out here (not
    read from mopeft) so that a wrong arch table would show."""
    return image_encoder.ImageEncoderViT(
        img_size=96,
        patch_size=16,
        embed_dim=64,
        depth=4,
        num_heads=4,
        mlp_ratio=4,
        out_chans=32,
        qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
        use_rel_pos=True,
        global_attn_indexes=(1, 3),
        window_size=4,
    )


def _lora_model(path: Path, method: str = "lora", options: dict | None = None) -> torch.nn.Module:
    """A tiny fp64 model with random non-zero LoRA weights (B is zero at init), saved to ``path``."""
    torch.manual_seed(0)
    opts = {"r": R, "alpha": ALPHA} if options is None else options
    model = build_model("tiny", 3, method, opts).double().eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.2)
    cfg = model_config("tiny", 3, method, model.method_options, 96, None, None, 0, ["a", "b", "c"])
    save_model(path, model, cfg)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    root = tmp_path_factory.mktemp("export")
    model = _lora_model(root / "model.safetensors")
    out = root / "adapter"
    assert main(["export", "--format", "peft", str(root / "model.safetensors"), "--out", str(out)]) == 0
    return model, out


def test_peft_loads_the_adapter_and_the_encoder_computes_the_same(exported):
    model, out = exported
    encoder = _stock_encoder().double().eval()
    frozen = {  # the same frozen weights: mopeft wraps each stock block as blocks.<i>.block
        k.replace(".block.", "."): v for k, v in model.image_encoder.state_dict().items() if ".lora." not in k
    }
    encoder.load_state_dict(frozen, strict=True)
    adapted = peft.PeftModel.from_pretrained(encoder, out).eval()
    lora = [n for n, _ in adapted.named_parameters() if ".lora_" in n]
    assert len(lora) == 8  # lora_A and lora_B in each of the 4 blocks: every tensor was taken
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ours = model.image_encoder(x)
        theirs = adapted(x)
        with adapted.disable_adapter():
            bare = adapted(x)
    assert (ours - theirs).abs().max().item() <= 1e-12
    assert (ours - bare).abs().max().item() > 1e-2  # the adapter is what makes them agree


def test_the_adapter_files_are_what_peft_itself_writes(exported, tmp_path):
    """Same tensor names and shapes, and the same value for every key of adapter_config.json, as
    peft's own save_pretrained of LoraConfig(r=2r, lora_alpha=2 alpha) on the encoder."""
    _, out = exported
    reference = peft.get_peft_model(
        _stock_encoder(), peft.LoraConfig(r=2 * R, lora_alpha=2 * ALPHA, target_modules=["qkv"])
    )
    reference.save_pretrained(tmp_path / "ref")
    ours_cfg = json.loads((out / ADAPTER_CONFIG).read_text())
    theirs_cfg = json.loads((tmp_path / "ref" / ADAPTER_CONFIG).read_text())
    assert {k: v for k, v in ours_cfg.items() if theirs_cfg.get(k) != v} == {}
    assert ours_cfg["r"] == 4 and ours_cfg["lora_alpha"] == 6  # peft's scale 6/4 = alpha/r = 3/2

    def shapes(path: Path) -> dict[str, tuple[int, ...]]:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118

    assert shapes(out / ADAPTER_WEIGHTS) == shapes(tmp_path / "ref" / ADAPTER_WEIGHTS)


def test_lora_b_is_block_structured_with_zero_key_rows(exported):
    model, out = exported
    with safe_open(str(out / ADAPTER_WEIGHTS), framework="pt") as f:
        a = f.get_tensor("base_model.model.blocks.2.attn.qkv.lora_A.weight")
        b = f.get_tensor("base_model.model.blocks.2.attn.qkv.lora_B.weight")
    lora = model.image_encoder.blocks[2].lora
    c = 64
    assert torch.equal(a, torch.cat([lora.a_q.weight, lora.a_v.weight]))
    assert torch.equal(b[:c, :R], lora.b_q.weight) and torch.equal(b[2 * c :, R:], lora.b_v.weight)
    assert not b[c : 2 * c].any() and not b[:c, R:].any() and not b[2 * c :, :R].any()


def test_the_decoder_and_class_tokens_go_beside_the_adapter(exported):
    model, out = exported
    with safe_open(str(out / DECODER_FILE), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    expected = {k: v for k, v in trainable_state_dict(model).items() if not k.startswith("image_encoder.")}
    assert set(tensors) == set(expected) and any("class_tokens" in k for k in tensors)
    assert all(torch.equal(tensors[k], expected[k]) for k in expected)
    assert meta["format"] == DECODER_FORMAT and json.loads(meta["config"])["method"] == "lora"


def test_alpha_defaults_to_r_as_in_training(tmp_path):
    _lora_model(tmp_path / "model.safetensors", options={"r": 4, "alpha": None})
    assert (
        main(
            ["export", "--format", "peft", str(tmp_path / "model.safetensors"), "--out", str(tmp_path / "o")]
        )
        == 0
    )
    cfg = json.loads((tmp_path / "o" / ADAPTER_CONFIG).read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 8  # scale 1, like alpha = r = 4 here


@pytest.mark.parametrize("method", ["mopeft", "adapter", "decoder_ft"])
def test_other_methods_are_refused_in_one_line(tmp_path, capsys, method):
    path = tmp_path / "model.safetensors"
    _lora_model(path, method=method, options={})
    assert main(["export", "--format", "peft", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and f"'{method}'" in err and "lora" in err, err
    assert not (tmp_path / "o").exists()
