"""Side-by-side train-step and inference timing of every method, relative to full fine-tuning.

Why this shape (docs/performance.md, benchmark hygiene): machine load drifts, so timings of different
methods taken minutes apart are not comparable. Every model is built once, then the methods are run
round-robin inside each repetition (order rotated every repetition), after warm-up, with the same
batch, precision, optimiser (``make_optimizer``, as in training) and input; we keep the median over
steps. Forward (incl. loss), backward and optimizer step are timed separately because the optimizer
over all parameters is what separates PEFT from full FT beyond the FLOP ratio. On CUDA every
boundary is synchronised, bf16 autocast is the default and fp32 matmuls use TF32.

What a reader can trust the figures for:
 * inference is timed on the DEPLOYED form: a copy with the prefix reparametrisation folded
   (``fold_prefixes``) in eval mode; for LoRA also merged into qkv (``merge_lora``). ``infer_ms`` is
   the unmerged deployed form, ``infer_merged_ms`` the merged one (MoPEFT's gated LoRA cannot merge);
 * MFU = model FLOPs of one real step (``mopeft.measure.mfu``) / median step time / peak rate. The
   count is torch's FlopCounterMode, not the fvcore count behind ``mopeft flops`` and Table 4.5,
   because a step's backward is only visible at dispatch (fvcore traces the forward); the unit is
   FLOP = 2 x MAC, the peak rates' unit, and on a forward it is exactly twice fvcore's MACs on every
   matmul, convolution and attention operator (tests/test_bench.py);
 * peak memory is each method's OWN, although all models stay resident to keep the interleaving:
   its resident tensors (parameters, buffers, optimizer state) plus the step's peak allocation above
   what was allocated just before the step (activations, gradients, temporaries). The shared input
   batch is not included. CUDA only; on the CPU only the resident part is reported.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from mopeft.errors import InputError
from mopeft.measure.flops import MAC_IS_2_FLOP
from mopeft.measure.mfu import count_flops, default_peak_tflops, mfu_pct

log = logging.getLogger(__name__)

REFERENCE = "full_ft"
MEMORY_NOTE = (
    "peak_*_mb = the method's own resident tensors (parameters, buffers, optimizer state; resident_*_mb) "
    "+ its step's peak allocation above the memory allocated just before the step (activations, "
    "gradients, temporaries); every model stays resident (round-robin), other methods' memory is not "
    "included; the shared input batch is not counted; step peaks are measured on CUDA only"
)
INFERENCE_NOTE = (
    "inference on the deployed form: an eval-mode copy with prefixes folded; infer_ms = LoRA unmerged, "
    "infer_merged_ms = LoRA merged into qkv (methods with non-gated LoRA only)"
)
FLOPS_NOTE = (
    f"model FLOP ({MAC_IS_2_FLOP}, so twice the GMAC of `mopeft flops`) of one step of the whole batch, "
    "counted by torch's FlopCounterMode on a real step (fvcore, behind `mopeft flops`, traces the forward "
    "only), fused attention kernels counted as their matmuls (no backward recompute); "
    "MFU = FLOP / median time / peak_tflops"
)


@dataclass
class BenchConfig:
    arch: str = "tiny"
    methods: list[str] = field(default_factory=list)  # empty = every registered method
    # method -> its options (`mopeft train --set` values); a peft method's are its whole definition
    method_options: dict[str, dict[str, str]] = field(default_factory=dict)
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
    peak_tflops: float | None = None  # MFU denominator; default from the CUDA device name
    attention: str = "sdpa"  # the encoder's attention kernel (mopeft.peft.attention.BACKENDS)


def resolve(cfg: BenchConfig) -> BenchConfig:
    """Fill defaults and validate, naming the bad option."""
    from mopeft.methods import METHODS
    from mopeft.methods.registry import is_peft_method

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda"):
        raise InputError(f"--device must be cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda requested but no CUDA device is available")
    dtype = cfg.dtype or ("bf16" if device == "cuda" else "fp32")
    if dtype not in ("bf16", "fp32"):
        raise InputError(f"--dtype must be bf16 or fp32, got {dtype!r}")
    methods = list(cfg.methods) or list(METHODS)
    unknown = [m for m in methods if m not in METHODS and not is_peft_method(m)]
    if unknown:
        raise InputError(
            f"unknown method(s) {unknown}; known: {sorted(METHODS)}, or peft_<name> (an HF peft tuner)"
        )
    if REFERENCE not in methods:
        methods.append(REFERENCE)  # every ratio is relative to full fine-tuning
    methods = list(dict.fromkeys(methods))
    if stray := sorted(set(cfg.method_options) - set(methods)):
        raise InputError(
            f"--set names method(s) {stray} that --methods does not list; add them or drop the --set"
        )
    for name in ("batch_size", "steps", "num_classes"):
        if getattr(cfg, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.warmup < 0:
        raise InputError(f"--warmup must be >= 0, got {cfg.warmup}")
    if cfg.peak_tflops is not None and not cfg.peak_tflops > 0:
        raise InputError(f"--peak-tflops must be > 0, got {cfg.peak_tflops}")
    from mopeft.peft.attention import BACKENDS

    if cfg.attention not in BACKENDS:
        raise InputError(f"--attention must be one of {BACKENDS}, got {cfg.attention!r}")
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
class _Form:
    """One inference form of a method (deployed, or deployed + LoRA merged)."""

    model: nn.Module
    times: list[float] = field(default_factory=list)
    step_peak: int = 0
    flops: int | None = None


@dataclass
class _Entry:
    name: str
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    trainable: int
    forms: dict[str, _Form] = field(default_factory=dict)
    merge: str = "no LoRA"
    times: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in _KEYS})
    step_peak_train: int = 0
    train_flops: int | None = None


_KEYS = ("fwd", "bwd", "opt", "train")


def _build(cfg: BenchConfig, name: str) -> _Entry:
    from mopeft.methods.build import build_model
    from mopeft.train.optim import make_optimizer

    torch.manual_seed(cfg.seed)
    options = dict(cfg.method_options.get(name, {}))
    model = build_model(cfg.arch, cfg.num_classes, name, options, image_size=cfg.image_size).to(cfg.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"method {name} has no trainable parameters; nothing to benchmark")
    # The optimiser of `mopeft train` (the study's Adam with L2 weight decay), built by the same code.
    opt = make_optimizer(params, cfg.lr, cfg.weight_decay, cfg.device)
    entry = _Entry(name, model, opt, sum(p.numel() for p in params))
    forms, entry.merge = deployed_forms(model)
    entry.forms = {k: _Form(m) for k, m in forms.items()}
    return entry


def deployed_forms(model: nn.Module) -> tuple[dict[str, nn.Module], str]:
    """{"deployed": folded eval copy, "merged": + LoRA merged (when mergeable)} and what merging did.

    The copies share the model's frozen tensors (they never change), so only what training changes
    is duplicated; ``merge_lora`` writes new qkv weights instead of changing the shared ones.
    """
    from mopeft.peft.merge import merge_lora
    from mopeft.peft.state import fold_prefixes

    shared: dict[int, Any] = {id(p): p for p in model.parameters() if not p.requires_grad}
    deployed = copy.deepcopy(model, memo=shared)
    fold_prefixes(deployed)
    deployed.eval().requires_grad_(False)
    forms = {"deployed": deployed}
    merged = copy.deepcopy(deployed, memo={id(p): p for p in deployed.parameters()})
    try:
        n = merge_lora(merged)
    except ValueError as exc:
        return forms, f"not merged: {exc}"
    if n == 0:
        from mopeft.methods.registry import is_peft_method

        # peft's own layers (even its LoRA) are not the study's LoRA: timed as peft runs them.
        peft = is_peft_method(getattr(model, "method", ""))
        return forms, "not merged: an HF peft tuner" if peft else "no LoRA"
    forms["merged"] = merged
    return forms, f"merged in {n} blocks"


def _autocast(cfg: BenchConfig) -> torch.autocast:
    return torch.autocast(cfg.device, dtype=torch.bfloat16, enabled=cfg.dtype == "bf16")


@contextlib.contextmanager
def _cuda_speed_settings(cfg: BenchConfig) -> Iterator[None]:
    """TF32 for fp32 matmuls and convolutions on CUDA (as training uses), restored afterwards."""
    if cfg.device != "cuda":
        yield
        return
    try:
        old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    except RuntimeError:  # torch refuses to read the legacy flags once `fp32_precision` was set
        old = None
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        if old is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _mem_mark(cfg: BenchConfig) -> int:
    """Reset the peak counter; the bytes allocated right now (the step's baseline)."""
    if cfg.device != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats()
    return torch.cuda.memory_allocated()


def _mem_above(cfg: BenchConfig, mark: int) -> int:
    return torch.cuda.max_memory_allocated() - mark if cfg.device == "cuda" else 0


def tensor_bytes(tensors: Iterator[torch.Tensor] | list[torch.Tensor]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared tensors counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def resident_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Parameters + buffers of ``model`` + the optimizer's state tensors."""
    tensors = [*model.parameters(), *model.buffers()]
    if optimizer is not None:
        tensors += [v for st in optimizer.state.values() for v in st.values() if torch.is_tensor(v)]
    return tensor_bytes(tensors)


def _train_step(cfg: BenchConfig, e: _Entry, images: torch.Tensor, labels: torch.Tensor, timer: _Timer):
    from mopeft.train.losses import segmentation_loss

    mark = _mem_mark(cfg)
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
    return {"fwd": t1 - t0, "bwd": t2 - t1, "opt": t3 - t2, "train": t3 - t0}, _mem_above(cfg, mark)


def _infer_step(cfg: BenchConfig, model: nn.Module, images: torch.Tensor, timer: _Timer):
    mark = _mem_mark(cfg)
    t0 = timer.now()
    with torch.no_grad(), _autocast(cfg):
        model(images)
    return timer.now() - t0, _mem_above(cfg, mark)


def _count(cfg: BenchConfig, e: _Entry, images: torch.Tensor, labels: torch.Tensor, timer: _Timer) -> None:
    """FLOPs of one real train step (this step also creates the optimizer state) and of each form.

    Counted with the SDPA kernel whatever ``cfg.attention`` times: model FLOPs do not depend on the
    kernel, and a compiled FlexAttention would be traced again under the counter's dispatch mode.
    """
    from mopeft.peft.attention import attention_backend

    with attention_backend("sdpa"):
        e.train_flops = count_flops(lambda: _train_step(cfg, e, images, labels, timer))
        for form in e.forms.values():
            form.flops = count_flops(lambda m=form.model: _infer_step(cfg, m, images, timer))


def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build every method's model once, time them interleaved, return per-method medians and ratios."""
    from mopeft.peft.attention import attention_backend

    cfg = resolve(cfg)
    say = progress or (lambda _msg: None)
    with _cuda_speed_settings(cfg), attention_backend(cfg.attention):
        entries = []
        for name in cfg.methods:
            entries.append(_build(cfg, name))
            say(f"built {name} ({entries[-1].merge})")
        size = int(entries[0].model.image_size)
        gen = torch.Generator().manual_seed(cfg.seed)
        images = torch.randn(cfg.batch_size, 3, size, size, generator=gen).to(cfg.device)
        labels = torch.randint(0, cfg.num_classes, (cfg.batch_size, size, size), generator=gen)
        labels = labels.to(cfg.device)
        timer = _Timer(cfg.device)
        for e in entries:
            _count(cfg, e, images, labels, timer)
        say("counted FLOPs of one train step and one inference per method")
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
                    e.step_peak_train = max(e.step_peak_train, peak)
            for e in order:
                for form in e.forms.values():
                    seconds, peak = _infer_step(cfg, form.model, images, timer)
                    if timed:
                        form.times.append(seconds)
                        form.step_peak = max(form.step_peak, peak)
            say(f"repetition {rep + 1}/{cfg.warmup + cfg.steps}{'' if timed else ' (warm-up)'}")
    return _summarise(cfg, entries, size)


def _peak_rate(cfg: BenchConfig, device_name: str) -> tuple[float | None, str | None]:
    if cfg.peak_tflops is not None:
        return cfg.peak_tflops, "--peak-tflops"
    if cfg.device != "cuda":
        return None, None
    return default_peak_tflops(device_name, "bf16" if cfg.dtype == "bf16" else "tf32")


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 2**20


def _form_row(cfg: BenchConfig, form: _Form | None, peak: float | None, prefix: str) -> dict[str, Any]:
    if form is None:
        return {f"{prefix}_{k}": None for k in ("ms", "ms_min", "img_s", "gflop", "mfu_pct")} | {
            f"peak_{prefix}_mb": None
        }
    med = statistics.median(form.times)
    cuda = cfg.device == "cuda"
    resident = resident_bytes(form.model)
    return {
        f"{prefix}_ms": 1000 * med,
        f"{prefix}_ms_min": 1000 * min(form.times),
        f"{prefix}_img_s": cfg.batch_size / med,
        f"{prefix}_gflop": None if form.flops is None else form.flops / 1e9,
        f"{prefix}_mfu_pct": mfu_pct(form.flops, med, peak),
        f"peak_{prefix}_mb": _mb(resident + form.step_peak) if cuda else None,
        f"resident_{prefix}_mb": _mb(resident),
        f"step_peak_{prefix}_mb": _mb(form.step_peak) if cuda else None,
    }


def _summarise(cfg: BenchConfig, entries: list[_Entry], size: int) -> dict[str, Any]:
    device_name = _device_name(cfg.device)
    peak, peak_source = _peak_rate(cfg, device_name)
    cuda = cfg.device == "cuda"
    rows = []
    for e in entries:
        med = {k: statistics.median(v) for k, v in e.times.items()}
        resident = resident_bytes(e.model, e.optimizer)
        row = {
            "method": e.name,
            "trainable_params": e.trainable,
            "train_ms": 1000 * med["train"],
            "train_ms_min": 1000 * min(e.times["train"]),
            "fwd_ms": 1000 * med["fwd"],
            "bwd_ms": 1000 * med["bwd"],
            "opt_ms": 1000 * med["opt"],
            "train_img_s": cfg.batch_size / med["train"],
            "train_gflop": None if e.train_flops is None else e.train_flops / 1e9,
            "train_mfu_pct": mfu_pct(e.train_flops, med["train"], peak),
            "peak_train_mb": _mb(resident + e.step_peak_train) if cuda else None,
            "resident_train_mb": _mb(resident),
            "step_peak_train_mb": _mb(e.step_peak_train) if cuda else None,
            "merge": e.merge,
        }
        row |= _form_row(cfg, e.forms["deployed"], peak, "infer")
        row |= _form_row(cfg, e.forms.get("merged"), peak, "infer_merged")
        rows.append(row)
    ref = next(r for r in rows if r["method"] == REFERENCE)
    for r in rows:
        r["train_pct"] = 100 * r["train_ms"] / ref["train_ms"]
        r["infer_pct"] = 100 * r["infer_ms"] / ref["infer_ms"]
        merged = r["infer_merged_ms"]
        r["infer_merged_pct"] = None if merged is None else 100 * merged / ref["infer_ms"]
    return {
        "config": {**asdict(cfg), "image_size": size},
        "reference": REFERENCE,
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "tf32": cuda,
        "timing": "median over steps after warm-up; methods interleaved round-robin; ms per batch",
        "inference": INFERENCE_NOTE,
        "memory": MEMORY_NOTE,
        "flops": FLOPS_NOTE,
        "peak_tflops": peak,
        "peak_tflops_source": peak_source
        or "none: MFU omitted (no default for this device; pass --peak-tflops)",
        "results": rows,
    }


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    import platform

    return platform.processor() or platform.machine()


def format_table(result: dict[str, Any]) -> str:
    """Fixed-width table of the medians, ratios to full FT, MFU and peak memory ("-" where not measured)."""
    cols = [
        ("method", "method", "{}"),
        ("trainable", "trainable_params", "{:,}"),
        ("train ms", "train_ms", "{:.1f}"),
        ("fwd", "fwd_ms", "{:.1f}"),
        ("bwd", "bwd_ms", "{:.1f}"),
        ("opt", "opt_ms", "{:.1f}"),
        ("train %", "train_pct", "{:.1f}"),
        ("img/s", "train_img_s", "{:.2f}"),
        ("GFLOP", "train_gflop", "{:.4g}"),
        ("MFU %", "train_mfu_pct", "{:.1f}"),
        ("infer ms", "infer_ms", "{:.1f}"),
        ("merged ms", "infer_merged_ms", "{:.1f}"),
        ("infer %", "infer_pct", "{:.1f}"),
        ("infer MFU %", "infer_mfu_pct", "{:.1f}"),
        ("peak train MB", "peak_train_mb", "{:.0f}"),
        ("peak infer MB", "peak_infer_mb", "{:.0f}"),
    ]
    table = [[title for title, _, _ in cols]]
    for r in result["results"]:
        table.append(["-" if r.get(key) is None else fmt.format(r[key]) for _, key, fmt in cols])
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = [
        " ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in table
    ]
    c = result["config"]
    peak = result.get("peak_tflops")
    lines += [
        f"{c['arch']} @ {c['image_size']}², batch {c['batch_size']}, {c['dtype']}, "
        f"{c['attention']} attention on {c['device']} "
        f"({result['device_name']}, {result['threads']} threads), median of {c['steps']} steps after "
        f"{c['warmup']} warm-up; % = relative to {result['reference']}",
        f"GFLOP: {result['flops']}; peak {peak if peak is not None else '-'} TFLOP/s "
        f"({result['peak_tflops_source']})",
        f"inference: {result['inference']}",
        f"memory: {result['memory']}",
    ]
    return "\n".join(lines)
