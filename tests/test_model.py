"""SemanticSAM head, SAM preprocessing/postprocessing, checkpoint verification and resizing."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide

from mopeft.data.loading.preprocess import postprocess, preprocess_image, preprocess_label, resized_shape
from mopeft.io import sha256_file
from mopeft.methods.build import build_model
from mopeft.model.arch import ARCHS, build_sam_parts
from mopeft.model.weights import VIT_B_SHA256, VIT_B_URL, load_checkpoint


@pytest.mark.parametrize("k", [2, 255])
def test_semantic_head_shape_and_per_class_cost(k):
    torch.manual_seed(0)
    model = build_model("tiny", k, "decoder_ft")
    out = model(torch.randn(2, 3, 96, 96))
    assert out.shape == (2, k, 24, 24)
    dec = model.mask_decoder
    assert not hasattr(dec, "iou_prediction_head")  # the IoU head is excluded from the model
    assert dec.class_tokens.weight.shape == (k, 32)
    assert sum(p.numel() for p in dec.hypernetwork.parameters()) == 32 * 32 + 32 + 32 * 32 + 32 + 32 * 4 + 4


def test_shared_hypernetwork_equals_per_class_application():
    torch.manual_seed(0)
    model = build_model("tiny", 3, "baseline").eval()
    dec = model.mask_decoder
    x = torch.randn(1, 3, 96, 96)
    captured = {}
    dec.transformer.register_forward_hook(lambda m, i, o: captured.update(hs=o[0], src=o[1]))
    logits = model(x)
    up = dec.output_upscaling(captured["src"].transpose(1, 2).reshape(1, 32, 6, 6))
    for c in range(3):  # class c's mask = hypernetwork(token c output) . upscaled embedding, SAM's formula
        w = dec.hypernetwork(captured["hs"][0, 1 + c])
        assert torch.allclose(logits[0, c], torch.einsum("d,dhw->hw", w, up[0]), atol=1e-5)


def test_resize_matches_sam_and_preprocess_pads():
    for h, w in [(30, 60), (61, 20), (96, 96), (1000, 667)]:
        assert resized_shape(h, w, 96) == ResizeLongestSide.get_preprocess_shape(h, w, 96)
    img = np.full((30, 60, 3), 255, np.uint8)
    x, size = preprocess_image(img, 96)
    assert size == (48, 96) and x.shape == (3, 96, 96)
    want = (255 - torch.tensor([123.675, 116.28, 103.53])) / torch.tensor([58.395, 57.12, 57.375])
    assert torch.allclose(x[:, :48, :], want.view(3, 1, 1).expand(3, 48, 96))
    assert x[:, 48:].abs().max() == 0
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        preprocess_image(np.zeros((4, 4), np.uint8), 96)


def test_label_and_postprocess_roundtrip_non_square():
    label = np.zeros((30, 60), np.uint8)
    label[:, 30:] = 1
    label[20:, :] = 2
    y = preprocess_label(label, 96)
    assert y.shape == (96, 96) and (y[48:] == 255).all() and (y[:48] != 255).all()
    assert set(np.unique(y[:48].numpy())) == {0, 1, 2}
    # Logits at S/4 from the padded label; the padding votes for a bogus class 3 that must be cropped away.
    low = y[2::4, 2::4].clone()
    low[low == 255] = 3
    logits = F.one_hot(low, 4).permute(2, 0, 1)[None].float() * 10
    out = postprocess(logits, (48, 96), (30, 60))
    assert out.shape == (1, 4, 30, 60)
    pred = out[0].argmax(0).numpy()
    assert 3 not in pred
    assert (pred == label).mean() > 0.93  # only pixels next to class boundaries may differ


def _fake_checkpoint(tmp_path, size):
    torch.manual_seed(1)
    enc, prompt, dec = build_sam_parts(ARCHS["tiny"], size)
    for blk in enc.blocks:
        blk.attn.rel_pos_h.data.normal_()
        blk.attn.rel_pos_w.data.normal_()
    enc.pos_embed.data.normal_()
    state = {
        f"{prefix}.{k}": v
        for prefix, m in (("image_encoder", enc), ("prompt_encoder", prompt), ("mask_decoder", dec))
        for k, v in m.state_dict().items()
    }
    path = tmp_path / "fake_sam.pth"
    torch.save(state, path)
    return path, state


def test_checkpoint_interpolation_1024_to_512(tmp_path):
    path, state = _fake_checkpoint(tmp_path, 1024)
    model = build_model(
        "tiny", 3, "lora", image_size=512, checkpoint=path, checkpoint_sha256=sha256_file(path)
    )
    sd = model.state_dict()
    assert sd["image_encoder.pos_embed"].shape == (1, 32, 32, 64)
    want = F.interpolate(state["image_encoder.pos_embed"].permute(0, 3, 1, 2), size=(32, 32), mode="bilinear")
    assert torch.allclose(sd["image_encoder.pos_embed"], want.permute(0, 2, 3, 1))
    for i in range(4):
        src = state[f"image_encoder.blocks.{i}.attn.rel_pos_h"]
        got = sd[f"image_encoder.blocks.{i}.block.attn.rel_pos_h"]
        if i in (1, 3):  # global: (2*64-1) -> (2*32-1) rows, linear along the table
            assert src.shape == (127, 16) and got.shape == (63, 16)
            ref = F.interpolate(src.T[None], size=63, mode="linear").squeeze(0).T
            assert torch.allclose(got, ref, atol=1e-6)
        else:  # windowed tables depend on the window only and load unchanged
            assert torch.equal(got, src) and got.shape == (7, 16)
    assert torch.equal(
        sd["image_encoder.blocks.0.block.attn.qkv.weight"], state["image_encoder.blocks.0.attn.qkv.weight"]
    )
    hyper = "mask_decoder.output_hypernetworks_mlps.0.layers.2.weight"
    assert torch.equal(sd["mask_decoder.hypernetwork.layers.2.weight"], state[hyper])
    assert (
        sd["mask_decoder.class_tokens.weight"] - state["mask_decoder.mask_tokens.weight"][0]
    ).abs().max() < 0.2
    assert model(torch.randn(1, 3, 512, 512)).shape == (1, 3, 128, 128)


def test_checkpoint_errors_name_the_file(tmp_path):
    path, _ = _fake_checkpoint(tmp_path, 96)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*sha256"):
        load_checkpoint(path, "0" * 64)
    with pytest.raises(FileNotFoundError, match=r"missing\.pth"):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save({"image_encoder.pos_embed": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"bad\.pth"):
        build_model("tiny", 2, "baseline", checkpoint=tmp_path / "bad.pth")
    assert re.fullmatch(r"[0-9a-f]{64}", VIT_B_SHA256) and VIT_B_URL.endswith("sam_vit_b_01ec64.pth")
