"""Side-by-side train-step and inference timing of every method, relative to full fine-tuning.

Why this shape (performance.md, "benchmark hygiene"): machine load drifts, so timings of different
methods taken minutes apart are not comparable. Every model is built once, then the methods are run
round-robin inside each repetition (order rotated every repetition), after warm-up, with the same
batch, precision and attention implementation; we keep the median over many steps. The forward
(incl. loss), backward and optimizer parts are timed separately because the optimizer step over all
parameters is what separates PEFT from full FT beyond the FLOP ratio. On CUDA every boundary is
synchronised, bf16 autocast is used by default and peak memory is read per step.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

REFERENCE = "full_ft"


@dataclass
class BenchConfig:
    arch: str = "tiny"
    methods: list[str] = field(default_factory=list)  # empty = every registered method
    image_size: int | None = None
    batch_size: int = 2
    steps: int = 20
    warmup: int = 3
    num_classes: int = 8
    dtype: str | None = None  # "bf16" | "fp32"; default bf16 on CUDA, fp32 on CPU
    device: str | None = None  # "cpu" | "cuda"; default cuda when available
    lr: float = 1e-4
    weight_decay: float = 1e-4
    seed: int = 0


def resolve(cfg: BenchConfig) -> BenchConfig:
    """Fill defaults and validate, naming the bad option."""
    from mopeft.methods import METHODS

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    dtype = cfg.dtype or ("bf16" if device == "cuda" else "fp32")
    if dtype not in ("bf16", "fp32"):
        raise ValueError(f"--dtype must be bf16 or fp32, got {dtype!r}")
    methods = list(cfg.methods) or list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {sorted(METHODS)}")
    if REFERENCE not in methods:
        methods.append(REFERENCE)  # every ratio is relative to full fine-tuning
    methods = list(dict.fromkeys(methods))
    for name in ("batch_size", "steps", "num_classes"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {cfg.warmup}")
    return BenchConfig(**{**asdict(cfg), "methods": methods, "device": device, "dtype": dtype})


class _Timer:
    """Wall-clock with a device synchronisation at every read (CUDA kernels run asynchronously)."""

    def __init__(self, device: str) -> None:
        self.cuda = device == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


@dataclass
class _Entry:
    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainable: int
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in _KEYS})
    peak_train: int = 0
    peak_infer: int = 0


_KEYS = ("fwd", "bwd", "opt", "train", "infer")


def _build(cfg: BenchConfig, name: str) -> _Entry:
    from mopeft.compose.build import build_model

    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, cfg.num_classes, name, {}, image_size=cfg.image_size).to(cfg.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"method {name} has no trainable parameters; nothing to benchmark")
    from mopeft.train.optim import make_optimizer

    # The optimiser of `mopeft train` (the study's Adam with L2 weight decay), built by the same code.
    opt = make_optimizer(params, cfg.lr, cfg.weight_decay, cfg.device)
    return _Entry(name, model, opt, sum(p.numel() for p in params))


def _autocast(cfg: BenchConfig) -> torch.autocast:
    return torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=cfg.dtype == "bf16")


def _peak_reset(cfg: BenchConfig) -> None:
    if cfg.device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak(cfg: BenchConfig) -> int:
    return torch.cuda.max_memory_allocated() if cfg.device == "cuda" else 0


def _train_step(cfg: BenchConfig, e: _Entry, images: torch.Tensor, labels: torch.Tensor, timer: _Timer):
    from mopeft.train.losses import segmentation_loss

    _peak_reset(cfg)
    t0 = timer.now()
    with _autocast(cfg):
        logits = e.model(images)
    loss = segmentation_loss(logits, labels)
    t1 = timer.now()
    loss.backward()
    t2 = timer.now()
    e.optimizer.step()
    e.optimizer.zero_grad(set_to_none=True)
    t3 = timer.now()
    return {"fwd": t1 - t0, "bwd": t2 - t1, "opt": t3 - t2, "train": t3 - t0}, _peak(cfg)


def _infer_step(cfg: BenchConfig, e: _Entry, images: torch.Tensor, timer: _Timer):
    _peak_reset(cfg)
    t0 = timer.now()
    with torch.no_grad(), _autocast(cfg):
        e.model(images)
    return {"infer": timer.now() - t0}, _peak(cfg)


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build every method's model once, time them interleaved, return per-method medians and ratios."""
    cfg = resolve(cfg)
    entries = [_build(cfg, name) for name in cfg.methods]
    size = int(entries[0].model.image_size)
    gen = torch.Generator().manual_seed(cfg.seed)
    images = torch.randn(cfg.batch_size, 3, size, size, generator=gen).to(cfg.device)
    labels = torch.randint(0, cfg.num_classes, (cfg.batch_size, size, size), generator=gen).to(cfg.device)
    timer = _Timer(cfg.device)
    for rep in range(cfg.warmup + cfg.steps):
        shift = rep % len(entries)  # rotate so no method always follows the same neighbour
        order = entries[shift:] + entries[:shift]
        timed = rep >= cfg.warmup
        # Training pass, then inference pass: an inference step then always follows another
        # inference step, never a (differently sized) train step whose freed memory it would reuse.
        for e in order:
            train_t, peak = _train_step(cfg, e, images, labels, timer)
            if timed:
                for k, v in train_t.items():
                    e.times[k].append(v)
                e.peak_train = max(e.peak_train, peak)
        for e in order:
            infer_t, peak = _infer_step(cfg, e, images, timer)
            if timed:
                e.times["infer"].extend(infer_t.values())
                e.peak_infer = max(e.peak_infer, peak)
        if progress:
            progress(
                f"repetition {rep + 1}/{cfg.warmup + cfg.steps}{' (warm-up)' if rep < cfg.warmup else ''}"
            )
    return _summarise(cfg, entries, size)


def _summarise(cfg: BenchConfig, entries: list[_Entry], size: int) -> dict[str, Any]:
    rows = []
    for e in entries:
        med = {k: 1000 * statistics.median(v) for k, v in e.times.items()}
        rows.append(
            {
                "method": e.name,
                "trainable_params": e.trainable,
                "train_ms": med["train"],
                "train_ms_min": 1000 * min(e.times["train"]),
                "fwd_ms": med["fwd"],
                "bwd_ms": med["bwd"],
                "opt_ms": med["opt"],
                "infer_ms": med["infer"],
                "infer_ms_min": 1000 * min(e.times["infer"]),
                "train_img_s": cfg.batch_size / (med["train"] / 1000),
                "infer_img_s": cfg.batch_size / (med["infer"] / 1000),
                "peak_train_mb": e.peak_train / 2**20 if cfg.device == "cuda" else None,
                "peak_infer_mb": e.peak_infer / 2**20 if cfg.device == "cuda" else None,
            }
        )
    ref = next(r for r in rows if r["method"] == REFERENCE)
    for r in rows:
        r["train_pct"] = 100 * r["train_ms"] / ref["train_ms"]
        r["infer_pct"] = 100 * r["infer_ms"] / ref["infer_ms"]
    return {
        "config": {**asdict(cfg), "image_size": size},
        "reference": REFERENCE,
        "device_name": _device_name(cfg.device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "timing": "median over steps after warm-up; methods interleaved round-robin; ms per batch",
        "results": rows,
    }


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return platform.processor() or platform.machine()


def format_table(result: dict[str, Any]) -> str:
    """Fixed-width table of the medians, ratios to full FT and peak memory ("-" where not measured)."""
    cols = [
        ("method", "method", "{}"),
        ("trainable", "trainable_params", "{:,}"),
        ("train ms", "train_ms", "{:.1f}"),
        ("fwd", "fwd_ms", "{:.1f}"),
        ("bwd", "bwd_ms", "{:.1f}"),
        ("opt", "opt_ms", "{:.1f}"),
        ("train %", "train_pct", "{:.1f}"),
        ("infer ms", "infer_ms", "{:.1f}"),
        ("infer %", "infer_pct", "{:.1f}"),
        ("train img/s", "train_img_s", "{:.2f}"),
        ("infer img/s", "infer_img_s", "{:.2f}"),
        ("peak train MB", "peak_train_mb", "{:.0f}"),
        ("peak infer MB", "peak_infer_mb", "{:.0f}"),
    ]
    table = [[title for title, _, _ in cols]]
    for r in result["results"]:
        table.append(["-" if r[key] is None else fmt.format(r[key]) for _, key, fmt in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [
        " ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    c = result["config"]
    lines.append(
        f"{c['arch']} @ {c['image_size']}², batch {c['batch_size']}, {c['dtype']} on {c['device']} "
        f"({result['device_name']}, {result['threads']} threads), median of {c['steps']} steps after "
        f"{c['warmup']} warm-up; % = relative to {result['reference']}"
    )
    return "\n".join(lines)
