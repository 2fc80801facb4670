"""Benchmark structure and sanity (no timing assertions): side-by-side interleaving, a real training
step, inference on the deployed form, FLOP counts against independent references, MFU and memory
arithmetic, ratios relative to full_ft, table + JSON output, clear errors."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mopeft.cli import main
from mopeft.measure import bench, mfu
from mopeft.measure.bench import BenchConfig, resolve
from mopeft.methods import METHODS
from mopeft.peft.block import PEFTBlock
from mopeft.peft.prefix import DeepPrompt


def _cpu(methods, **kw) -> BenchConfig:
    return resolve(
        BenchConfig(**{"arch": "tiny", "methods": methods, "batch_size": 1, "device": "cpu", **kw})
    )


def test_cli_two_methods_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--arch", "tiny", "--methods", "lora,full_ft", "--steps", "2", "--warmup", "1"]
    rc = main([*argv, "--batch-size", "1", "--device", "cpu", "--peak-tflops", "0.5", "--json", str(out)])
    stdout, err = capsys.readouterr()
    assert rc == 0, err
    assert "train %" in stdout and "MFU %" in stdout and "lora" in stdout and "full_ft" in stdout
    res = json.loads(out.read_text())
    rows = {r["method"]: r for r in res["results"]}
    assert list(rows) == ["lora", "full_ft"]
    assert res["reference"] == "full_ft" and res["config"]["dtype"] == "fp32"
    assert res["peak_tflops"] == 0.5 and res["peak_tflops_source"] == "--peak-tflops"
    assert "resident" in res["memory"] and "deployed" in res["inference"]
    assert rows["full_ft"]["train_pct"] == pytest.approx(100) and rows["full_ft"][
        "infer_pct"
    ] == pytest.approx(100)
    assert 0 < rows["lora"]["trainable_params"] < rows["full_ft"]["trainable_params"]
    for r in rows.values():
        for key in ("train_ms", "fwd_ms", "bwd_ms", "opt_ms", "infer_ms", "train_img_s", "infer_img_s"):
            assert r[key] > 0, key
        # medians of the parts need not add up in general, but each part is within the whole step
        assert max(r["fwd_ms"], r["bwd_ms"], r["opt_ms"]) <= r["train_ms"] * 1.000001
        assert r["train_img_s"] == pytest.approx(1000 / r["train_ms"])
        assert r["train_pct"] == pytest.approx(100 * r["train_ms"] / rows["full_ft"]["train_ms"])
        assert r["train_mfu_pct"] == pytest.approx(
            100 * r["train_gflop"] * 1e9 / (r["train_ms"] / 1000) / 0.5e12
        )
        assert r["infer_gflop"] > 0 and r["infer_mfu_pct"] > 0
        assert r["peak_train_mb"] is None and r["step_peak_train_mb"] is None  # CUDA only
        assert r["resident_train_mb"] > r["resident_infer_mb"] > 0  # optimizer state is training-only
    # LoRA: unmerged and merged deployed forms both timed; full FT has nothing to merge
    assert rows["lora"]["infer_merged_ms"] > 0 and rows["lora"]["merge"] == "merged in 4 blocks"
    assert rows["lora"]["infer_merged_gflop"] < rows["lora"]["infer_gflop"]  # the LoRA matmuls are gone
    assert rows["full_ft"]["infer_merged_ms"] is None and rows["full_ft"]["infer_merged_pct"] is None


def test_methods_are_interleaved_round_robin(monkeypatch):
    calls = []
    real = bench._train_step

    def spy(cfg, e, images, labels, timer):
        calls.append(e.name)
        return real(cfg, e, images, labels, timer)

    monkeypatch.setattr(bench, "_train_step", spy)
    cfg = BenchConfig(
        arch="tiny", methods=["decoder_ft", "full_ft"], batch_size=1, steps=2, warmup=1, device="cpu"
    )
    res = bench.run_bench(cfg)
    # one FLOP-counting step per method, then every repetition runs every method once (rotated),
    # never one method's steps in a block
    counting = ["decoder_ft", "full_ft"]
    assert calls == [*counting, "decoder_ft", "full_ft", "full_ft", "decoder_ft", "decoder_ft", "full_ft"]
    assert all(len(r) for r in res["results"])


def test_inference_is_timed_on_the_deployed_form_only(monkeypatch):
    seen = []
    real = bench._infer_step

    def spy(cfg, model, images, timer):
        seen.append(model)
        return real(cfg, model, images, timer)

    monkeypatch.setattr(bench, "_infer_step", spy)
    built = []
    real_build = bench._build
    monkeypatch.setattr(bench, "_build", lambda cfg, name: built.append(real_build(cfg, name)) or built[-1])
    bench.run_bench(
        BenchConfig(arch="tiny", methods=["vpt_deep", "lora"], batch_size=1, steps=1, warmup=0, device="cpu")
    )
    training_models = {id(e.model) for e in built}
    assert seen and not any(id(m) in training_models for m in seen)
    assert all(not m.training for m in seen)
    prompts = [p for m in seen for p in m.modules() if isinstance(p, DeepPrompt)]
    assert prompts and all(p.folded for p in prompts)  # the reparametrisation MLP is gone
    lora_blocks = [b for m in seen for b in m.modules() if isinstance(b, PEFTBlock) and b.lora is not None]
    merged_blocks = [b for m in seen for b in m.modules() if isinstance(b, PEFTBlock) and b.lora is None]
    assert lora_blocks and merged_blocks  # lora timed unmerged AND merged


def test_deployed_forms_share_frozen_weights_and_keep_outputs():
    cfg = _cpu(["lora"])
    entry = bench._build(cfg, "lora")
    model, merged = entry.model, entry.forms["merged"].model
    deployed = entry.forms["deployed"].model
    torch.manual_seed(0)
    with torch.no_grad():
        for blk in model.image_encoder.blocks:
            blk.lora.b_q.weight.normal_(0, 0.2)  # changes the training model only
    assert merged.image_encoder.patch_embed.proj.weight is model.image_encoder.patch_embed.proj.weight
    qkv = model.image_encoder.blocks[0].block.attn.qkv.weight
    assert merged.image_encoder.blocks[0].block.attn.qkv.weight is not qkv  # merging wrote a new tensor
    assert deployed.image_encoder.blocks[0].block.attn.qkv.weight is qkv
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x), merged(x), rtol=1e-4, atol=1e-4)  # both at build time


def test_mopeft_is_not_merged_and_says_why():
    entry = bench._build(_cpu(["mopeft"]), "mopeft")
    assert set(entry.forms) == {"deployed"} and "gate" in entry.merge


def test_train_step_really_trains_only_trainable_tensors():
    cfg = _cpu(["lora"])
    entry = bench._build(cfg, "lora")
    before = {n: p.detach().clone() for n, p in entry.model.named_parameters()}
    images = torch.randn(1, 3, 96, 96)
    labels = torch.randint(0, cfg.num_classes, (1, 96, 96))
    times, _ = bench._train_step(cfg, entry, images, labels, bench._Timer("cpu"))
    assert times["train"] == pytest.approx(times["fwd"] + times["bwd"] + times["opt"])
    changed = {n for n, p in entry.model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in entry.model.named_parameters() if p.requires_grad}
    assert changed and changed <= trainable
    assert all(p.grad is None for p in entry.model.parameters())  # zero_grad(set_to_none) inside the step


# ----------------------------------------------------------------------------------------- FLOPs
def _sdpa_fwd_bwd():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, n, 8, generator=g, requires_grad=True) for n in (10, 12, 12))

    def fwd_bwd():
        F.scaled_dot_product_attention(q, k, v).sum().backward()

    return fwd_bwd


def test_fused_cpu_attention_counts_as_its_matmuls():
    fwd_bwd = _sdpa_fwd_bwd()
    with FlopCounterMode(display=False) as plain:
        fwd_bwd()
    # the hole the mapping fills: torch's counter gives the fused CPU kernel nothing
    assert plain.get_total_flops() == 0
    fused = mfu.count_flops(fwd_bwd)
    with sdpa_kernel(SDPBackend.MATH):  # independent reference: explicit bmm's, counted by torch itself
        math_path = mfu.count_flops(fwd_bwd)
    fwd = 2 * (2 * 3) * 10 * 12 * (8 + 8)
    assert fused == math_path == 3 * fwd  # forward + a backward of twice its matmuls


@pytest.mark.parametrize("method", list(METHODS))
def test_inference_flops_are_exactly_twice_fvcore_macs(method):
    """The bench's counter (FlopCounterMode, FLOP) and Table 4.5's (fvcore, MAC) on the same deployed
    model: FLOP = 2 x MAC exactly on every matmul, conv and attention op; fvcore also counts layer
    norm, the counter does not. Shallow VPT's last block runs a prompt MLP whose output is dropped:
    eager execution (the counter) pays for it, fvcore's jit trace removes it as dead code."""
    pytest.importorskip("fvcore")
    from mopeft.measure.flops import MODEL_PARTS, count_macs

    model = bench._build(_cpu([method]), method).forms["deployed"].model
    x = torch.randn(1, 3, 96, 96)  # batch 1 as fvcore's count (prefix k/v are computed per batch)
    counted = mfu.count_flops(lambda: model(x))
    with torch.no_grad():
        macs = count_macs(model, (x,), MODEL_PARTS).by_operator[""]
    assert macs["layer_norm"] > 0 and {"linear", "conv", "scaled_dot_product_attention"} <= set(macs)
    dead = 0
    if method == "vpt":
        encoder = model.image_encoder
        mlp = encoder.blocks[-1].mlp
        prompts = encoder.prompts.tokens.shape[0]
        per_token = sum(lin.in_features * lin.out_features for lin in (mlp.lin1, mlp.lin2))
        dead = 2 * prompts * per_token
    assert counted == 2 * sum(v for op, v in macs.items() if op != "layer_norm") + dead


def test_train_flops_follow_what_gets_gradients():
    cfg = _cpu(["full_ft", "lora", "decoder_ft"], batch_size=2)
    images, labels = torch.randn(2, 3, 96, 96), torch.randint(0, 8, (2, 96, 96))
    flops = {}
    for name in cfg.methods:
        e = bench._build(cfg, name)
        bench._count(cfg, e, images, labels, bench._Timer("cpu"))
        flops[name] = (e.train_flops, e.forms["deployed"].flops)
    full, infer = flops["full_ft"]
    assert 2.8 * infer < full <= 3 * infer  # forward + dX + dW (no dX for the input image)
    assert flops["decoder_ft"][0] < 1.5 * infer < flops["lora"][0] < full  # frozen encoder: no backward


def test_mfu_and_default_peaks():
    assert mfu.mfu_pct(10**12, 0.5, 4.0) == pytest.approx(50.0)
    assert mfu.mfu_pct(None, 0.5, 4.0) is None and mfu.mfu_pct(10**12, 0.5, None) is None
    assert mfu.default_peak_tflops("NVIDIA H100 80GB HBM3", "bf16")[0] == 989.4
    assert mfu.default_peak_tflops("NVIDIA H200", "bf16")[0] == 989.4
    assert mfu.default_peak_tflops("NVIDIA H200", "tf32")[0] == 494.7
    assert mfu.default_peak_tflops("NVIDIA H100 PCIe", "bf16")[0] == 756.0
    assert mfu.default_peak_tflops("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156.0
    for other in ("NVIDIA H100 NVL", "NVIDIA H200 NVL", "Tesla T4", "x86_64"):
        assert mfu.default_peak_tflops(other, "bf16") == (None, None), other


# ---------------------------------------------------------------------------------------- memory
def test_resident_bytes_counts_params_buffers_and_optimizer_state_once():
    lin = torch.nn.Linear(10, 5)
    lin.register_buffer("view_of_weight", lin.weight.data[:2])  # a view: same storage, not counted twice
    opt = torch.optim.Adam(lin.parameters(), foreach=True)
    lin(torch.randn(3, 10)).sum().backward()
    opt.step()
    n = 10 * 5 + 5
    # exp_avg + exp_avg_sq per parameter, plus one fp32 `step` scalar per parameter tensor
    assert bench.resident_bytes(lin) == 4 * n
    assert bench.resident_bytes(lin, opt) == 4 * n + 2 * 4 * n + 2 * 4


def test_cuda_summary_adds_the_steps_own_peak_and_default_peak(monkeypatch):
    cfg = _cpu(["full_ft"], steps=1, warmup=0)
    e = bench._build(cfg, "full_ft")
    images, labels = torch.randn(1, 3, 96, 96), torch.randint(0, 8, (1, 96, 96))
    bench._count(cfg, e, images, labels, bench._Timer("cpu"))
    e.times = {k: [0.5] for k in bench._KEYS}
    e.forms["deployed"].times = [0.25]
    e.step_peak_train, e.forms["deployed"].step_peak = 3 * 2**20, 2**20
    monkeypatch.setattr(bench, "_device_name", lambda device: "NVIDIA H200")
    res = bench._summarise(dataclasses.replace(cfg, device="cuda", dtype="bf16"), [e], 96)
    row = res["results"][0]
    assert row["peak_train_mb"] == pytest.approx(row["resident_train_mb"] + 3)
    assert row["peak_infer_mb"] == pytest.approx(row["resident_infer_mb"] + 1)
    assert res["peak_tflops"] == 989.4 and "H200" in res["peak_tflops_source"]
    assert row["train_mfu_pct"] == pytest.approx(100 * e.train_flops / 0.5 / 989.4e12)


def test_tf32_on_for_cuda_only_and_restored():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with bench._cuda_speed_settings(dataclasses.replace(_cpu(["lora"]), device="cuda")):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with bench._cuda_speed_settings(_cpu(["lora"])):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_full_ft_reference_added_and_bad_input():
    assert resolve(BenchConfig(methods=["lora"], device="cpu")).methods == ["lora", "full_ft"]
    with pytest.raises(ValueError, match="unknown method"):
        resolve(BenchConfig(methods=["nope"], device="cpu"))
    with pytest.raises(ValueError, match="--steps"):
        resolve(BenchConfig(steps=0, device="cpu"))
    with pytest.raises(ValueError, match="--peak-tflops"):
        resolve(BenchConfig(peak_tflops=0, device="cpu"))
    with pytest.raises(ValueError, match="--attention"):
        resolve(BenchConfig(attention="stock", device="cpu"))
