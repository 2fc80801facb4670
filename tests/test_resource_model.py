"""The resource model (`mopeft plan`): its counts agree with real tensors, its CUDA emulation with
torch's own CUDA autocast, its composition of pieces with whole-step traces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

from mopeft.measure.cuda_emulation import cuda_autocast, efficient_attention
from mopeft.measure.gpus import GPUS, get_gpu, gpu_for_device_name
from mopeft.measure.step_model import StepSpec, trace_eval, trace_head, trace_train
from mopeft.measure.trace import StepCounter
from mopeft.methods.build import build_model
from mopeft.plan.jobs import config_digest, load_config, plan_path, run_jobs
from mopeft.train.losses import segmentation_loss

ROOT = Path(__file__).resolve().parents[1]


class _Dtypes(TorchDispatchMode):
    """(op, output dtypes) of every kernel, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = out if isinstance(out, tuple | list) else (out,)
        dtypes = tuple(t.dtype for t in flat if isinstance(t, torch.Tensor))
        self.seen.append((func._schema.name, dtypes))
        return out


def _forward_dtypes(device: str, emulate: bool) -> list[tuple[str, tuple]]:
    torch.manual_seed(0)
    with FakeTensorMode():
        model = build_model("tiny", 5, "mopeft", {}, device=device)
        x = torch.randn(2, 3, 96, 96, device=device)
        rec = _Dtypes()
        if emulate:
            with rec, cuda_autocast():
                model(x)
        else:
            # Torch's real AutocastCUDA kernels (they run on fake CUDA tensors; only backward needs a
            # driver), with SDPA routed to the same kernel op the emulation picks.
            torch.set_autocast_dtype("cuda", torch.bfloat16)
            torch.set_autocast_enabled("cuda", True)
            sdpa = torch.nn.functional.scaled_dot_product_attention
            torch.nn.functional.scaled_dot_product_attention = efficient_attention
            try:
                with rec:
                    model(x)
            finally:
                torch.nn.functional.scaled_dot_product_attention = sdpa
                torch.set_autocast_enabled("cuda", False)
                torch.clear_autocast_cache()
    return rec.seen


def test_emulated_autocast_gives_every_kernel_the_dtype_cuda_autocast_gives():
    real = _forward_dtypes("cuda", emulate=False)
    emulated = _forward_dtypes("cpu", emulate=True)
    # Compare what the kernels produce; the casts themselves (_to_copy) may be ordered differently.
    strip = lambda seen: [s for s in seen if s[0] != "aten::_to_copy" and not s[0].startswith("prim::")]  # noqa: E731
    assert strip(emulated) == strip(real)
    assert any(torch.bfloat16 in d for _, d in real) and any(torch.float32 in d for _, d in real)


def _real_step(arch: str, method: str, k: int, size: int, batch: int) -> StepCounter:
    torch.manual_seed(0)
    model = build_model(arch, k, method, {}, image_size=size)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, k, (batch, size, size))
    counter = StepCounter(round_to=1)
    counter.track([*model.parameters(), *model.buffers(), x, y])
    counter.resident = counter.live
    with counter:
        logits = model(x)
        segmentation_loss(logits, y).backward()
    return counter


def _fake_step(arch: str, method: str, k: int, size: int, batch: int) -> StepCounter:
    with FakeTensorMode():
        return _real_step(arch, method, k, size, batch)


@pytest.mark.parametrize(("arch", "size"), [("tiny", 96), ("vit_b", 256)])
def test_fake_step_counts_what_real_tensors_hold(arch, size):
    """The same fp32 CPU step on real and on fake tensors: same FLOPs, same bytes moved, same peak
    of live tensor bytes (the fake run is what the plan runs at 1024²)."""
    real = _real_step(arch, "lora", 7, size, 2)
    fake = _fake_step(arch, "lora", 7, size, 2)
    assert fake.flops == real.flops > 0
    assert fake.bytes == pytest.approx(real.bytes, rel=0.01)
    assert fake.peak == pytest.approx(real.peak, rel=0.01)
    # Activations came on top of parameters + inputs, and backward freed what autograd held.
    assert real.peak > real.resident and real.live < real.peak


def test_counted_peak_equals_the_cpu_allocators_own_record():
    """Independent of the counter: torch's profiler logs every CPU allocation and free; the maximum
    of their running sum during the step is its peak (tiny model: the kernels allocate no hidden
    scratch; at ViT-B 256² the counter is 0.8 % under it: scripts/check_resource_model.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("check", ROOT / "scripts/check_resource_model.py")
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    allocator = check.profiler_peak("tiny", 96)
    real, _, _ = check.counted("tiny", 96, fake=False)
    fake, _, _ = check.counted("tiny", 96, fake=True)
    assert allocator > 0
    assert real == pytest.approx(allocator, rel=0.005) and fake == real


def test_pieces_compose_to_the_whole_step_at_another_k():
    """A step at K composed from the method's trace at K=2 and a head trace at K equals a whole
    trace at K: FLOPs, bytes and peak (the plan traces ~20 steps instead of ~160)."""
    spec = StepSpec("lora", 2, arch="tiny", image_size=96, batch_size=2)
    base = trace_train(spec)
    head = trace_head(spec.with_k(9), base.frozen_encoder)
    composed = base.at_k(head, 9)
    whole = trace_train(spec.with_k(9))
    assert composed.flops() == whole.flops()
    assert composed.bytes() == pytest.approx(whole.bytes(), rel=1e-3)
    assert composed.peak() == pytest.approx(whole.peak(), rel=0.02)


def test_eval_pieces_compose_to_the_whole_evaluation_at_another_k():
    """The plan traces evaluation's encoder once per method and the K- and size-dependent rest from
    an embedding: composed, equal to a whole trace (bf16 emulation: the embedding is fp32)."""
    spec = StepSpec("lora", 2, arch="tiny", image_size=96, batch_size=2)
    base = trace_eval(spec, (96, 96))
    composed = base.at_k(trace_eval(spec.with_k(9), (120, 100), encoder=False))
    whole = trace_eval(spec.with_k(9), (120, 100))
    assert composed.flops(5) == whole.flops(5)
    assert composed.peak == whole.peak
    assert composed.roofline_s(GPUS["h100"], 5) == pytest.approx(whole.roofline_s(GPUS["h100"], 5))


def test_frozen_encoder_steps_cost_only_the_head_once_cached():
    spec = StepSpec("decoder_ft", 4, arch="tiny", image_size=96, batch_size=2)
    cost = trace_train(spec)
    assert cost.frozen_encoder
    assert cost.flops(cached=True) < cost.flops(cached=False)
    assert cost.roofline_s(GPUS["h100"], cached=True) < cost.roofline_s(GPUS["h100"], cached=False)


def test_eval_cost_grows_with_the_original_image_size_and_k():
    spec = StepSpec("lora", 3, arch="tiny", image_size=96, batch_size=2)
    small = trace_eval(spec, (96, 96))
    large = trace_eval(spec.with_k(30), (400, 300))
    assert large.peak > small.peak


def test_gpu_table_and_device_names():
    assert get_gpu("a100-40").memory_gb == 40 and get_gpu("h200").hbm_tbps == 4.8
    assert gpu_for_device_name("NVIDIA A100-SXM4-40GB").key == "a100-40"
    assert gpu_for_device_name("NVIDIA A100-SXM4-80GB").key == "a100-80"
    assert gpu_for_device_name("NVIDIA H100 80GB HBM3").key == "h100"
    assert gpu_for_device_name("NVIDIA H100 NVL") is None
    with pytest.raises(ValueError, match="unknown GPU"):
        get_gpu("v100")


def _demo_config() -> dict:
    return load_config([ROOT / "config/demo.yaml"], ROOT / "workflow/schemas/config.schema.yaml")


def test_snakemake_takes_gpu_job_resources_from_the_plan(tmp_path):
    """A plan for the config is read by the DAG: a job's mem_mb, runtime, CPUs and GPU constraint
    are the plan's (times the attempt); a plan made for another config is ignored with one line
    saying so."""
    config = _demo_config()
    run = "plan_resources_test"
    config["run"] = run
    job = next(j for j in run_jobs(config) if j.rule == "train")
    record = {"mem_mb": 1234, "runtime_min": 17, "cpus": 3, "workers": 1, "gpu_mem_mb": 999,
              "gpu_need_bytes": 10**9, "cache_host_mb": 55}  # fmt: skip
    path = ROOT / plan_path(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        for digest, expect in ((config_digest(config), True), ("stale", False)):
            doc = {"config_digest": digest, "gpu": {"label": "test GPU"}, "jobs": {job.key: record}}
            path.write_text(json.dumps(doc))
            cell = f"results/{run}/cells/{job.dataset}/{job.method}/{job.variant}/seed{job.seed}"
            target = f"{cell}/units/{job.unit}/model.safetensors"
            res = subprocess.run(
                [sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1", "--configfile",
                 "config/demo.yaml", "--config", f"run={run}", "gpu_constraints={40: gpu40, 80: gpu80}",
                 "--", target],
                cwd=ROOT, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            out = res.stdout + res.stderr
            assert res.returncode == 0, out[-3000:]
            train = out[out.index("rule train:") :]
            assert ("mem_mb=1234" in train and "runtime=17" in train and "cpus_per_task=3" in train) is expect
            # the site's mapping: 1 GB needed -> the smallest listed GPU (without a plan: the largest)
            assert ("constraint=gpu40" if expect else "constraint=gpu80") in train
            assert ("made for another config" in out) is not expect
    finally:
        path.unlink(missing_ok=True)
        if path.parent.exists() and not any(path.parent.iterdir()):
            path.parent.rmdir()


def test_plan_command_sizes_every_job_and_requests_at_least_what_it_models(tmp_path, monkeypatch, capsys):
    """`mopeft plan` on the demo: one record per DAG job, each asking for at least the memory it
    models, fitting the GPU, with CPUs for its workers; JSON, Markdown, CSV and summary written."""
    from mopeft.cli import main

    monkeypatch.chdir(ROOT)  # the schema is found relative to the checkout, as from the README
    out = tmp_path / "plan.json"
    argv = ["plan", "--configfile", "config/demo.yaml", "--gpu", "a100-40", "--json", str(out),
            "--md", str(tmp_path / "plan.md"), "--csv", str(tmp_path / "plan.csv"),
            "--summary", str(tmp_path / "summary.json")]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["gpu"]["key"] == "a100-40" and doc["config_digest"] == config_digest(_demo_config())
    assert set(doc["jobs"]) == {j.key for j in run_jobs(_demo_config())}
    assert {p["rule"] for p in doc["jobs"].values()} == {"train", "evaluate", "detect"}
    for p in doc["jobs"].values():
        assert p["mem_mb"] * 2**20 >= p["host_peak_bytes"]
        assert p["gpu_mem_mb"] * 2**20 >= p["gpu_need_bytes"] >= p["gpu_peak_bytes"] > 0
        assert p["fits_gpu"] and p["runtime_min"] >= 1 and p["cpus"] >= p["workers"] + 2
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "jobs" not in summary and summary["rows"]
    assert "Resource plan on A100 SXM 40GB" in capsys.readouterr().out
    assert (tmp_path / "plan.md").read_text().startswith("## Resource plan")
    assert (tmp_path / "plan.csv").read_text().startswith("rule,dataset,jobs")
    assert main(["plan", "--configfile", str(tmp_path / "missing.yaml")]) == 2
