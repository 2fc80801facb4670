#!/usr/bin/env python3
"""The one-go GPU check (DEVELOPERS.md): bench of every method, a real-loader LoRA run, the
embedding-cache speed-up of decoder_ft, FlexAttention against SDPA (CUDA, in the time left); ONE
JSON + ONE Markdown summary under --out.

Why each part is a subprocess of the real CLI (``python -m mopeft.cli bench|train``): that is what
the study runs; a part that crashes or overruns its time budget is killed (with its DataLoader
workers) and reported as such while the others still run; and one part's GPU memory never inflates
the next one's peak. Figures the CLI does not (yet) report are written as ``null`` with a note,
never estimated. Exit status 0 when every part ran, 1 when one failed or ran out of time (the
targets are measurements: a missed target is reported, not an error).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a bare checkout (the GPU machine) as well as installed
    sys.path.insert(0, str(ROOT))

from mopeft.io import write_json, write_text  # noqa: E402

SCHEMA = 1
TARGET_MFU_PCT = 35.0
TARGET_DATA_WAIT_PCT = 5.0
TARGET_TOTAL_S = 8 * 60
TIMING_MISSING = (
    "train_log.json has no 'timing' block with this field: this checkout's `mopeft train` does not "
    "report it yet"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "gpu_check_out"))
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--keep-work", action="store_true", help="keep the scratch folder (data, logs)")
    p.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda if available")
    p.add_argument("--arch", default="vit_b")
    p.add_argument("--image-size", type=int, default=None, help="default: the arch's (1024 for vit_b)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="bench; default bf16 on cuda")
    p.add_argument("--methods", default="all", help="bench methods")
    p.add_argument("--bench-warmup", type=int, default=3)
    p.add_argument("--bench-steps", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, default=None, help="MFU denominator (bench's default)")
    p.add_argument("--train-steps", type=int, default=50, help="steps of the lora run")
    p.add_argument("--train-images", type=int, default=32, help="generated training images")
    p.add_argument("--cache-epochs", type=int, default=3, help="epochs of each decoder_ft run")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: train's)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads of every part (OMP_NUM_THREADS)"
    )
    p.add_argument("--flex-steps", type=int, default=5, help="timed steps of the FlexAttention bench")
    p.add_argument("--budget-bench", type=float, default=200.0, help="seconds before bench is killed")
    p.add_argument("--budget-train", type=float, default=80.0, help="seconds for the lora run")
    p.add_argument("--budget-cache", type=float, default=80.0, help="seconds for both decoder_ft runs")
    p.add_argument(
        "--budget-flex", type=float, default=80.0, help="seconds for the FlexAttention bench (CUDA only)"
    )
    p.add_argument("--bench-classes", type=int, default=8, help="class count K of the main bench")
    p.add_argument("--bench-k", type=int, default=201, help="the study's largest K (lora + full_ft)")
    p.add_argument("--budget-bench-k", type=float, default=70.0, help="seconds for the large-K bench")
    p.add_argument("--budget-model", type=float, default=90.0, help="seconds for the resource model's traces")
    p.add_argument("--setup-s", type=float, default=None, help="set-up time already spent (from the shell)")
    args = p.parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.dtype is None:
        args.dtype = "bf16" if args.device == "cuda" else "fp32"
    if args.image_size is None:
        from mopeft.model.arch import get_arch

        args.image_size = get_arch(args.arch).default_image_size
    for name in ("batch_size", "bench_steps", "train_steps", "train_images", "cache_epochs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    return args


def say(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ data
def write_dataset(
    root: Path, n_train: int, n_test: int, size: int, num_classes: int = 4, seed: int = 0
) -> Path:
    """A prepared dataset ``root/gpucheck`` of JPEG images (size², as the study's tiles) whose colour
    encodes the class of each 32-px block, written with the project's own savers."""
    import numpy as np

    from mopeft.data.datasets.common import save_image, save_label

    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, size=(num_classes, 3)).astype(np.int16)
    out = root / "gpucheck"
    counts = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            coarse = rng.integers(0, num_classes, size=(size // 32 + 1,) * 2)
            label = np.kron(coarse, np.ones((32, 32), dtype=np.uint8))[:size, :size].astype(np.uint8)
            noise = rng.integers(-20, 21, size=(size, size, 3), dtype=np.int16)
            image = (palette[label] + noise).clip(0, 255).astype(np.uint8)
            label[:4, :4] = 255  # a few ignored pixels, as real labels have
            save_image(out / split / "images" / f"{split}_{i:04d}.jpg", image)
            save_label(out / split / "labels" / f"{split}_{i:04d}.png", label, num_classes)
        counts[split] = n
    write_json(
        out / "meta.json",
        {
            "dataset": "gpucheck",
            "name": "gpucheck",
            "domain": "Synthetic",
            "classes": [f"c{i}" for i in range(num_classes)],
            "num_classes": num_classes,
            "ignore_index": 255,
            "channels": "RGB",
            "tasks": [],
            "train_split": "official",
            "counts": counts,
            "sources": {},
            "synthetic": True,
            "tile_size": size,
        },
    )
    return out


# ----------------------------------------------------------------------------------- subprocesses
def run_part(
    name: str, argv: list[str], budget_s: float, log_path: Path, threads: int | None = None
) -> dict[str, Any]:
    """Run ``python -m mopeft.cli ARGV`` with a time budget; its output is streamed and logged."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "mopeft.cli", *argv]
    say(f"{name}: {' '.join(argv)} (budget {budget_s:.0f} s)")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                print(f"  [{name}] {line.rstrip()}", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        rc, maxrss_kib = _wait(proc, max(budget_s, 1.0))
        status = "timeout" if rc is None else ("ok" if rc == 0 else "failed")
        if rc is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole session: DataLoader workers too
            rc, maxrss_kib = _wait(proc, None)
        reader.join(timeout=10)
    wall = time.perf_counter() - t0
    say(f"{name}: {status} in {wall:.1f} s")
    tail = log_path.read_text(errors="replace")[-3000:]
    return {
        "status": status,
        "returncode": rc,
        "wall_s": wall,
        # The process's own peak resident memory (Linux wait4, KiB): the plan assumes 3 GiB for a
        # CUDA process (mopeft.plan.model.Assumptions); DataLoader workers are not included.
        "host_peak_rss_mb": None if maxrss_kib is None else maxrss_kib / 1024,
        "log_tail": None if status == "ok" else tail,
    }


def _wait(proc: subprocess.Popen, timeout: float | None) -> tuple[int | None, int | None]:
    """(exit code, peak RSS in KiB) of ``proc``, or (None, None) if ``timeout`` s pass first.
    Reaped with ``os.wait4`` (Popen.wait would drop the child's resource usage)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_maxrss
        if deadline is not None and time.monotonic() > deadline:
            return None, None
        time.sleep(0.1)


def train_flags() -> set[str]:
    """Option strings `mopeft train` accepts in this checkout (the interface lands in stages)."""
    from mopeft.commands import train as train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_arguments(parser)
    return set(parser._option_string_actions)


# ----------------------------------------------------------------------------------------- parts
def run_bench(
    args: argparse.Namespace, work: Path, name: str, methods: str, steps: int, warmup: int,
    budget_s: float, attention: str = "sdpa", num_classes: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:  # fmt: skip
    """One ``mopeft bench`` process -> (part status, per-method summary or None)."""
    out = work / f"{name}.json"
    argv = [
        "bench", "--arch", args.arch, "--image-size", str(args.image_size), "--methods", methods,
        "--batch-size", str(args.batch_size), "--steps", str(steps), "--warmup", str(warmup),
        "--dtype", args.dtype, "--device", args.device, "--attention", attention, "--json", str(out),
        "--num-classes", str(num_classes or args.bench_classes),
    ]  # fmt: skip
    if args.peak_tflops is not None:
        argv += ["--peak-tflops", str(args.peak_tflops)]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    part = run_part(name, argv, budget_s, work / "logs" / f"{name}.log", args.threads)
    if part["status"] != "ok" or not out.exists():
        return part, None
    raw = json.loads(out.read_text())
    keys = (
        "train_ms", "fwd_ms", "bwd_ms", "opt_ms", "train_pct", "train_img_s", "train_gflop",
        "train_mfu_pct", "infer_ms", "infer_merged_ms", "infer_pct", "infer_img_s", "infer_mfu_pct",
        "trainable_params", "merge",
    )  # fmt: skip
    rows = {}
    for r in raw["results"]:
        row = {k: r.get(k) for k in keys}
        for kind in ("train", "infer"):
            mb = r.get(f"peak_{kind}_mb")
            row[f"peak_{kind}_gb"] = None if mb is None else mb / 1024
        rows[r["method"]] = row
    summary = {
        "device_name": raw.get("device_name"),
        "torch": raw.get("torch"),
        "config": raw.get("config"),
        "peak_tflops": raw.get("peak_tflops"),
        "peak_tflops_source": raw.get("peak_tflops_source"),
        "memory": raw.get("memory"),
        "inference": raw.get("inference"),
        "methods": rows,
    }
    return part, summary


def part_bench(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    return run_bench(
        args, work, "bench", args.methods, args.bench_steps, args.bench_warmup, args.budget_bench
    )


def part_bench_k(args: argparse.Namespace, work: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """lora and full_ft at the study's largest class count: the loss at full resolution grows with K."""
    return run_bench(
        args, work, "bench_k", "lora,full_ft", 5, 2, args.budget_bench_k, num_classes=args.bench_k
    )


def part_model(args: argparse.Namespace, cases: list[tuple[str, int]]) -> dict[str, Any]:
    """The resource model's predictions for the bench's own shapes (``mopeft plan``'s traces): peak
    GPU memory, FLOPs and roofline step time on this GPU, so the first GPU run measures the model's
    error. In-process, on the CPU; cases that do not fit ``--budget-model`` are skipped and said so."""
    from mopeft.measure.gpus import get_gpu, gpu_for_device_name
    from mopeft.measure.step_model import StepSpec, trace_train
    from mopeft.plan.model import Assumptions

    t0 = time.perf_counter()
    name = None
    if args.device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
    gpu = (gpu_for_device_name(name) if name else None) or get_gpu("h100")
    efficiency = Assumptions().roofline_efficiency
    result: dict[str, Any] = {"gpu": gpu.key, "roofline_efficiency": efficiency, "cases": {}, "notes": []}
    if gpu.key == "h100" and not (name and "H100" in name):
        result["notes"].append(f"roofline on H100 SXM figures ({name or args.device} is not in the table)")
    for method, k in cases:
        if time.perf_counter() - t0 > args.budget_model:
            result["notes"].append(f"model: {method} @ K={k} skipped (--budget-model {args.budget_model:g})")
            continue
        try:
            spec = StepSpec(method, k, arch=args.arch, image_size=args.image_size,
                            batch_size=args.batch_size, precision=args.dtype)  # fmt: skip
            cost = trace_train(spec)
        except Exception as exc:  # a model failure must not cost the measurements
            result["notes"].append(f"model: {method} @ K={k} failed: {type(exc).__name__}: {exc}")
            continue
        roofline = cost.roofline_s(gpu, cached=False)
        result["cases"][f"{method}@{k}"] = {
            "peak_gb": cost.peak(cached=False) / 2**30,
            "gflop": cost.flops(cached=False) / 1e9,
            "gb_moved": cost.bytes(cached=False) / 1e9,
            "roofline_ms": 1e3 * roofline,
            "predicted_ms": 1e3 * roofline / efficiency,
        }
    result["wall_s"] = time.perf_counter() - t0
    return result


def model_vs_measured(model: dict[str, Any], benches: dict[int, dict[str, Any] | None]) -> list[dict]:
    """One row per traced case: predicted beside measured peak memory and step time (their ratio is
    the model's error; measured / roofline is the efficiency the plan assumes)."""
    rows = []
    for case, pred in model.get("cases", {}).items():
        method, k = case.rsplit("@", 1)
        measured = ((benches.get(int(k)) or {}).get("methods") or {}).get(method) or {}
        ms, gb = measured.get("train_ms"), measured.get("peak_train_gb")
        rows.append(
            {
                "case": case,
                "peak_gb_model": pred["peak_gb"],
                "peak_gb_measured": gb,
                "peak_ratio": gb / pred["peak_gb"] if gb else None,
                "roofline_ms": pred["roofline_ms"],
                "predicted_ms": pred["predicted_ms"],
                "train_ms_measured": ms,
                "efficiency_measured": pred["roofline_ms"] / ms if ms else None,
            }
        )
    return rows


def part_flex(
    args: argparse.Namespace, work: Path, sdpa: dict[str, Any] | None, left_s: float
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """lora and full_ft with compiled FlexAttention against the SDPA figures of the main bench.

    Runs last, in what is left of the check's time target: it is the part that can be cut.
    """
    result: dict[str, Any] = {"methods": {}, "notes": []}
    if args.device != "cuda":
        result["notes"].append("not run: FlexAttention has no backward on the CPU")
        return None, result
    budget = min(args.budget_flex, left_s)
    if budget < 30:
        result["notes"].append(f"not run: only {left_s:.0f} s left of the {TARGET_TOTAL_S} s target")
        return None, result
    warmup = max(args.bench_warmup, 2)  # the first steps compile the kernels
    part, flex = run_bench(args, work, "bench_flex", "lora", args.flex_steps, warmup, budget, "flex")
    for m, row in ((flex or {}).get("methods") or {}).items():
        ref = ((sdpa or {}).get("methods") or {}).get(m, {})
        entry = {"flex": row, "sdpa": {k: ref.get(k) for k in ("train_ms", "infer_ms", "peak_train_gb")}}
        for key in ("train_ms", "infer_ms"):
            a, b = ref.get(key), row.get(key)
            entry[f"{key}_sdpa_over_flex"] = a / b if a and b else None
        result["methods"][m] = entry
    return part, result


def _timing(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "train_log.json"
    if not path.exists():
        return None
    timing = json.loads(path.read_text()).get("timing")
    return timing if isinstance(timing, dict) else None


def _train_argv(args: argparse.Namespace, data: Path, method: str, out: Path, flags: set[str]) -> list[str]:
    argv = [
        "train", "--data", str(data), "--method", method, "--arch", args.arch,
        "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
        "--device", args.device, "--checkpoint-every", "100000", "--out", str(out),
    ]  # fmt: skip
    if args.workers is not None and "--workers" in flags:
        argv += ["--workers", str(args.workers)]
    if "--log-every" in flags:
        argv += ["--log-every", "10"]
    return argv


def part_train(args: argparse.Namespace, work: Path, data: Path, flags: set[str]) -> dict[str, Any]:
    out = work / "train_lora"
    argv = [*_train_argv(args, data, "lora", out, flags), "--steps", str(args.train_steps)]
    part = run_part("train_lora", argv, args.budget_train, work / "logs" / "train_lora.log", args.threads)
    timing = _timing(out) if part["status"] == "ok" else None
    notes = []
    if part["status"] == "ok" and timing is None:
        notes.append(TIMING_MISSING)
    if args.workers is not None and "--workers" not in flags:
        notes.append("--workers not passed: this checkout's `mopeft train` has no such flag")

    def get(key: str) -> Any:
        value = (timing or {}).get(key)
        if part["status"] == "ok" and timing is not None and value is None:
            notes.append(f"timing.{key}: {TIMING_MISSING}")
        return value

    step_s = get("step_s")
    return {
        **part,
        "method": "lora",
        "steps": args.train_steps,
        "workers": (timing or {}).get("workers", args.workers if "--workers" in flags else None),
        "steps_timed": get("steps_timed"),
        "step_s": step_s,
        "img_s": args.batch_size / step_s if step_s else None,
        "data_wait_s": get("data_wait_s"),
        "data_wait_fraction": get("data_wait_fraction"),
        "notes": notes,
    }


def part_cache(args: argparse.Namespace, work: Path, data: Path, flags: set[str]) -> dict[str, Any]:
    """decoder_ft with the embedding cache (``--encoder-cache auto``) and without (``off``)."""
    has_flag = "--encoder-cache" in flags
    runs: dict[str, Any] = {}
    notes = []
    deadline = time.perf_counter() + args.budget_cache
    modes = ("off", "auto") if has_flag else ("off",)
    for mode in modes:
        key = "uncached" if mode == "off" else "cached"
        out = work / f"decoder_ft_{key}"
        argv = [*_train_argv(args, data, "decoder_ft", out, flags), "--epochs", str(args.cache_epochs)]
        if has_flag:
            argv += ["--encoder-cache", mode]
        left = deadline - time.perf_counter()
        log = work / "logs" / f"decoder_ft_{key}.log"
        part = run_part(f"decoder_ft_{key}", argv, left, log, args.threads)
        timing = _timing(out) if part["status"] == "ok" else None
        if part["status"] == "ok" and (timing is None or timing.get("step_s") is None):
            notes.append(f"{key}: {TIMING_MISSING}")
        runs[key] = {
            **part,
            "loop_s": (timing or {}).get("loop_s"),  # the whole training loop, cache filling included
            "step_s": (timing or {}).get("step_s"),
            "encoder_cache": (timing or {}).get("encoder_cache"),
            "steps_timed": (timing or {}).get("steps_timed"),
        }
    if not has_flag:
        notes.append("cached run skipped: this checkout's `mopeft train` has no --encoder-cache flag")
        runs["cached"] = None
    cached, uncached = runs.get("cached"), runs["uncached"]
    speedup = None
    if cached and cached.get("step_s") and uncached.get("step_s"):
        speedup = uncached["step_s"] / cached["step_s"]
    speedup_loop = None
    if cached and cached.get("loop_s") and uncached.get("loop_s"):
        speedup_loop = uncached["loop_s"] / cached["loop_s"]
    steps_per_epoch = math.ceil(args.train_images / args.batch_size)
    for run in (cached, uncached):
        if run is not None:
            run["epoch_s"] = run["step_s"] * steps_per_epoch if run.get("step_s") else None
    return {
        "method": "decoder_ft",
        "epochs": args.cache_epochs,
        "steps_per_epoch": steps_per_epoch,
        "uncached": uncached,
        "cached": cached,
        "speedup_per_step": speedup,  # equal steps, so also the speed-up per epoch
        "speedup_loop": speedup_loop,  # whole loops of the same epochs (train_log timing.loop_s)
        "definition": (
            "mean step time of `mopeft train --encoder-cache off` / `auto` over the same epochs (the cache "
            "fills in epoch 1); off encodes the frozen encoder one image at a time, as the cache does"
        ),
        "status": "ok" if all(r and r["status"] == "ok" for r in runs.values() if r) else "failed",
        "notes": notes,
    }


# --------------------------------------------------------------------------------------- targets
def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each pass / fail / None (not measurable here, with the reason)."""
    out = []
    methods = (summary.get("bench") or {}).get("methods") or {}
    full = methods.get("full_ft", {})
    mfu = full.get("train_mfu_pct")
    out.append(
        {
            "target": f"full_ft train MFU >= {TARGET_MFU_PCT:.0f} %",
            "value": mfu,
            "pass": None if mfu is None else mfu >= TARGET_MFU_PCT,
            "note": None if mfu is not None else "no MFU: no peak TFLOP/s for this device or bench failed",
        }
    )
    frac = (summary.get("train") or {}).get("data_wait_fraction")
    out.append(
        {
            "target": f"lora data wait < {TARGET_DATA_WAIT_PCT:.0f} % of step time",
            "value": None if frac is None else 100 * frac,
            "pass": None if frac is None else 100 * frac < TARGET_DATA_WAIT_PCT,
            "note": None if frac is not None else "no data-wait figure from `mopeft train`",
        }
    )
    ref = full.get("peak_train_gb")
    peft = {m: methods[m].get("peak_train_gb") for m in methods if m != "full_ft"}
    known = ref is not None and peft and all(v is not None for v in peft.values())
    worst = max(peft, key=lambda m: peft[m]) if known else None
    out.append(
        {
            "target": "every other method's peak train memory below full_ft's",
            "value": None if not known else {"full_ft_gb": ref, "largest": worst, "largest_gb": peft[worst]},
            "pass": None if not known else all(v < ref for v in peft.values()),
            "note": None if known else "no peak memory: it is measured on CUDA only (or bench failed)",
        }
    )
    total = summary["timings_s"].get("total")
    out.append(
        {
            "target": f"whole check <= {TARGET_TOTAL_S // 60} min incl. set-up",
            "value": total,
            "pass": None if total is None else total <= TARGET_TOTAL_S,
            "note": None if summary["timings_s"].get("setup") is not None else "set-up time not given",
        }
    )
    return out


# -------------------------------------------------------------------------------------- markdown
def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "–" if x is None else fmt.format(x)


def markdown(s: dict[str, Any]) -> str:
    cfg = s["config"]
    lines = [
        "# mopeft GPU check",
        "",
        f"{s['device'].get('name') or cfg['device']} · torch {s['device']['torch']} · {cfg['arch']} @ "
        f"{cfg['image_size']}², batch {cfg['batch_size']}, {cfg['dtype']} · total "
        f"{_f(s['timings_s'].get('total'), '{:.0f}')} s "
        f"(set-up {_f(s['timings_s'].get('setup'), '{:.0f}')} s)",
        "",
    ]
    bench = s.get("bench")
    if bench:
        peak = bench.get("peak_tflops")
        lines += [
            f"## bench ({cfg['bench_warmup']} warm-up + {cfg['bench_steps']} timed, medians; MFU against "
            f"{_f(peak)} TFLOP/s: {bench.get('peak_tflops_source')})",
            "",
            "| method | train ms | fwd / bwd / opt ms | train % | img/s | MFU % | infer ms (merged) | "
            "infer MFU % | peak train GB | peak infer GB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m, r in bench["methods"].items():
            merged = f" ({_f(r['infer_merged_ms'])})" if r.get("infer_merged_ms") is not None else ""
            lines.append(
                f"| {m} | {_f(r['train_ms'])} | {_f(r['fwd_ms'])} / {_f(r['bwd_ms'])} / {_f(r['opt_ms'])} | "
                f"{_f(r['train_pct'])} | {_f(r['train_img_s'], '{:.2f}')} | {_f(r['train_mfu_pct'])} | "
                f"{_f(r['infer_ms'])}{merged} | {_f(r['infer_mfu_pct'])} | "
                f"{_f(r['peak_train_gb'], '{:.2f}')} | {_f(r['peak_infer_gb'], '{:.2f}')} |"
            )
        lines += ["", f"Memory: {bench.get('memory')}", ""]
    else:
        lines += [f"## bench: {s['parts']['bench']['status']}", ""]
    t = s.get("train") or {}
    lines += [
        f"## train: lora, {t.get('steps')} steps through the real loader ({t.get('status')})",
        "",
        f"step {_f(t.get('step_s'), '{:.3f}')} s · {_f(t.get('img_s'), '{:.2f}')} img/s · data wait "
        f"{_f(t.get('data_wait_s'), '{:.3f}')} s/step = "
        f"{_f(None if t.get('data_wait_fraction') is None else 100 * t['data_wait_fraction'])} % · "
        f"workers {t.get('workers') if t.get('workers') is not None else 'default'} · process peak RSS "
        f"{_f(t.get('host_peak_rss_mb'), '{:.0f}')} MB (the plan assumes 3 GiB for a CUDA process)",
        "",
    ]
    c = s.get("cache") or {}
    un, ca = c.get("uncached") or {}, c.get("cached") or {}
    lines += [
        f"## embedding cache: decoder_ft, {c.get('epochs')} epochs × {c.get('steps_per_epoch')} steps",
        "",
        f"uncached {_f(un.get('step_s'), '{:.3f}')} s/step = {_f(un.get('epoch_s'), '{:.2f}')} s/epoch "
        f"({_f(un.get('wall_s'), '{:.0f}')} s process) · cached {_f(ca.get('step_s'), '{:.3f}')} s/step = "
        f"{_f(ca.get('epoch_s'), '{:.2f}')} s/epoch ({_f(ca.get('wall_s'), '{:.0f}')} s process) · "
        f"speed-up ×{_f(c.get('speedup_per_step'), '{:.2f}')} per step (timed steps), "
        f"×{_f(c.get('speedup_loop'), '{:.2f}')} over the whole loop "
        f"({_f(un.get('loop_s'), '{:.1f}')} s / {_f(ca.get('loop_s'), '{:.1f}')} s)",
        "",
    ]
    fx = s.get("flex") or {}
    if fx.get("methods"):
        lines += [
            "## FlexAttention (compiled) vs SDPA",
            "",
            "| method | train ms sdpa / flex | sdpa÷flex | infer ms sdpa / flex | sdpa÷flex | "
            "peak train GB sdpa / flex |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for m, r in fx["methods"].items():
            a, b = r["sdpa"], r["flex"]
            train_ratio, infer_ratio = r["train_ms_sdpa_over_flex"], r["infer_ms_sdpa_over_flex"]
            lines.append(
                f"| {m} | {_f(a['train_ms'])} / {_f(b['train_ms'])} | {_f(train_ratio, '{:.2f}')} | "
                f"{_f(a['infer_ms'])} / {_f(b['infer_ms'])} | {_f(infer_ratio, '{:.2f}')} | "
                f"{_f(a['peak_train_gb'], '{:.2f}')} / {_f(b['peak_train_gb'], '{:.2f}')} |"
            )
        lines.append("")
    mv = s.get("model_vs_measured") or []
    if mv:
        model = s.get("model") or {}
        lines += [
            f"## resource model vs measured (roofline on {model.get('gpu')}; plan assumes "
            f"{_f(100 * model.get('roofline_efficiency', 0), '{:.0f}')} % of it)",
            "",
            "| method @ K | peak GB model / measured | ratio | roofline ms | predicted ms / measured | "
            "measured efficiency |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in mv:
            lines.append(
                f"| {r['case']} | {_f(r['peak_gb_model'], '{:.2f}')} / "
                f"{_f(r['peak_gb_measured'], '{:.2f}')} | "
                f"{_f(r['peak_ratio'], '{:.2f}')} | {_f(r['roofline_ms'])} | {_f(r['predicted_ms'])} / "
                f"{_f(r['train_ms_measured'])} | {_f(r['efficiency_measured'], '{:.2f}')} |"
            )
        lines.append("")
    notes = [*t.get("notes", []), *c.get("notes", []), *fx.get("notes", [])]
    notes += (s.get("model") or {}).get("notes", [])
    if notes:
        lines += ["Notes:", *[f"- {n}" for n in notes], ""]
    lines += ["## targets", "", "| target | value | result |", "|---|---|---|"]
    for tg in s["targets"]:
        v = tg["value"]
        if isinstance(v, dict):
            v = f"full_ft {v['full_ft_gb']:.2f} GB, largest other {v['largest']} {v['largest_gb']:.2f} GB"
        elif isinstance(v, float):
            v = f"{v:.1f}"
        result = {True: "PASS", False: "FAIL", None: f"n/a ({tg['note']})"}[tg["pass"]]
        lines.append(f"| {tg['target']} | {'–' if v is None else v} | {result} |")
    lines += [
        "",
        "Parts: " + ", ".join(f"{k} {v['status']} {v['wall_s']:.0f} s" for k, v in s["parts"].items()),
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    args = parse_args(argv)
    import torch

    work = args.work or Path(tempfile.mkdtemp(prefix="mopeft_gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"device {args.device}, {args.arch} @ {args.image_size}², batch {args.batch_size}; scratch {work}")
    t0 = time.perf_counter()
    data = write_dataset(work / "data", args.train_images, 4, args.image_size)
    t_data = time.perf_counter() - t0
    say(f"dataset: {args.train_images} + 4 JPEG images at {args.image_size}² in {t_data:.1f} s")
    flags = train_flags()

    parts: dict[str, Any] = {}
    parts["bench"], bench = part_bench(args, work)
    train = part_train(args, work, data, flags)
    parts["train_lora"] = {k: train[k] for k in ("status", "returncode", "wall_s", "log_tail")}
    cache = part_cache(args, work, data, flags)
    for key in ("uncached", "cached"):
        if cache.get(key):
            parts[f"decoder_ft_{key}"] = {
                k: cache[key].pop(k) for k in ("status", "returncode", "wall_s", "log_tail")
            }
            cache[key]["wall_s"] = parts[f"decoder_ft_{key}"]["wall_s"]
    parts["bench_k"], bench_k = part_bench_k(args, work)
    bench_methods = list((bench or {}).get("methods") or {}) or ["lora", "full_ft"]
    cases = [(m, args.bench_classes) for m in bench_methods]
    cases += [("lora", args.bench_k), ("full_ft", args.bench_k)]
    model = part_model(args, cases)
    margin = 20.0  # writing the summary, and the shell's own start
    left = TARGET_TOTAL_S - (args.setup_s or 0.0) - (time.perf_counter() - t_start) - margin
    flex_part, flex = part_flex(args, work, bench, left)
    if flex_part is not None:
        parts["bench_flex"] = flex_part
    elapsed = time.perf_counter() - t_start
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "device": {
            "requested": args.device,
            "name": (bench or {}).get("device_name"),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
        },
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "train_interface": sorted(
            f for f in ("--workers", "--encoder-cache", "--log-every", "--compile") if f in flags
        ),
        "timings_s": {
            "setup": args.setup_s,
            "dataset": t_data,
            **{k: v["wall_s"] for k, v in parts.items()},
            "driver": elapsed,
            "total": elapsed + (args.setup_s or 0.0),
        },
        "parts": parts,
        "bench": bench,
        "train": {k: v for k, v in train.items() if k not in ("returncode", "log_tail")},
        "cache": cache,
        "flex": flex,
        "bench_k": bench_k,
        "model": model,
        "model_vs_measured": model_vs_measured(model, {args.bench_classes: bench, args.bench_k: bench_k}),
    }
    summary["targets"] = targets(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gpu_check.json", summary)
    md = markdown(summary)
    write_text(args.out / "gpu_check.md", md)
    failed = [k for k, v in parts.items() if v["status"] != "ok"]
    if args.keep_work or failed:
        say(f"scratch kept: {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    say(
        f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}"
        + (f"; FAILED: {failed}" if failed else "")
    )
    print(md, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
