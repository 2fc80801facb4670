"""The resource plan of a run: for every GPU job, what it needs (GPU and host memory, CPUs, loader
workers, wall time) and what the scheduler is asked for, on a named GPU.

Modeled, from shape-only traces of the real code (:mod:`mopeft.measure.step_model`): peak GPU
memory, FLOPs, bytes moved and the roofline time of one step. Assumed (stated here, shown in the
plan, measured by ``scripts/gpu_check.sh`` when a GPU is at hand): how close eager PyTorch gets to
the roofline, the host memory of a CUDA process and of a loader worker, the start-up time. Measured
on a CPU and recorded in the repo: the loader's per-worker decoding rate (``loader_rates.json``).
The requests add a margin (``mem_margin``, ``time_margin``) and Snakemake scales them by the
attempt on a retry.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

from mopeft.measure.gpus import GPU, GPUS
from mopeft.measure.step_model import EvalCost, StepSpec, TrainCost, trace_eval, trace_head, trace_train
from mopeft.plan.jobs import Job
from mopeft.train.encoder_cache import pinned_bytes

log = logging.getLogger(__name__)
GiB = 1 << 30
MiB = 1 << 20


@dataclass(frozen=True)
class Assumptions:
    """The plan's stated assumptions (docs/performance.md gives the reasons for each value)."""

    roofline_efficiency: float = 0.5  # achieved fraction of the roofline step time in eager mode
    gpu_overhead: float = 1.10  # caching-allocator fragmentation on top of the counted peak
    gpu_workspace_bytes: int = 1 * GiB  # cuBLAS/cuDNN workspaces and attention scratch
    process_host_bytes: int = 3 * GiB  # a CUDA PyTorch process: libraries, CUDA context, model load
    # One DataLoader worker (forked; its decode buffers and prefetched batches). Measured on the CPU:
    # 485 MiB RSS / 287 MiB PSS with 1024² PNG pairs; the rest is margin for larger source images.
    worker_host_bytes: int = 700 * MiB
    prefetch_batches: int = 4  # per worker (mopeft.data.loading.loader.make_loader)
    startup_s: float = 180.0  # imports, CUDA init, weights, worker start-up, the final save
    cache_device_bytes: int = 8 * GiB  # the embedding cache's GPU share (mopeft train's default)
    cache_host_cap_bytes: int = 64 * GiB  # the most host memory a job's cache may ask for
    detect_cpu_s_per_image: float = 0.25  # Masks2Boxes (connected components, rectangles) on CPU
    mem_margin: float = 1.25
    time_margin: float = 1.5
    min_cpus: int = 4
    max_cpus: int = 16
    min_runtime_min: int = 15


@dataclass(frozen=True)
class LoaderRates:
    """Images per second ONE process decodes (1024², per format), and where it was measured."""

    jpeg: float
    png: float
    machine: str
    source: str

    def per_worker(self, image_format: str, hw: tuple[int, int]) -> float:
        """Decoding cost grows with the pixels decoded; rates were measured at 1024²."""
        rate = self.jpeg if image_format == "jpeg" else self.png
        return rate * (1024 * 1024) / max(1, hw[0] * hw[1])


def loader_rates() -> LoaderRates:
    """The rates recorded in ``mopeft/plan/loader_rates.json`` (``mopeft bench-loader``)."""
    data = json.loads(resources.files("mopeft.plan").joinpath("loader_rates.json").read_text())
    return LoaderRates(data["jpeg_img_s"], data["png_img_s"], data["machine"], data["source"])


@dataclass(frozen=True)
class RunSettings:
    """What a run's config says about every job's step (config `model`, `training`)."""

    arch: str = "vit_b"
    image_size: int = 1024
    batch_size: int = 4
    precision: str = "bf16"
    attention: str = "sdpa"
    loss_resolution: str = "full"
    encoder_cache: str = "auto"
    eval_batch_size: int = 4

    @classmethod
    def from_config(cls, config: dict) -> RunSettings:
        t = config["training"]
        speed = t.get("speed") or {}
        return cls(
            arch=config["model"]["arch"],
            image_size=int(config["model"]["image_size"]),
            batch_size=int(t["batch_size"]),
            attention=speed.get("attention") or "sdpa",
            loss_resolution=(t.get("loss") or {}).get("resolution") or "full",
            encoder_cache=speed.get("encoder_cache") or "auto",
        )


@dataclass
class JobPlan:
    """One job's modeled needs and requests (the plan's JSON record)."""

    key: str
    rule: str
    dataset: str
    method: str
    variant: str
    seed: int
    unit: str
    num_classes: int
    items: int
    steps: int
    size_source: str
    gpu_peak_bytes: int
    gpu_need_bytes: int
    fits_gpu: bool
    host_peak_bytes: int
    workers: int
    cpus: int
    step_s: float
    loader_s: float
    flops: int
    bytes_moved: int
    wall_s: float
    mem_mb: int
    runtime_min: int
    gpu_mem_mb: int
    cache_host_mb: int = 0
    notes: list[str] = field(default_factory=list)


class Planner:
    """Traces each distinct step once and plans every job from the traces."""

    def __init__(
        self,
        settings: RunSettings,
        gpu: GPU,
        assumptions: Assumptions | None = None,
        rates: LoaderRates | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.gpu = gpu
        self.a = assumptions or Assumptions()
        self.rates = rates or loader_rates()
        self.say = progress or (lambda _m: None)
        self._train: dict[tuple, TrainCost] = {}
        self._heads: dict[tuple, Any] = {}
        self._eval: dict[tuple, EvalCost] = {}
        self._eval_heads: dict[tuple, EvalCost] = {}

    def on_gpu(self, gpu: GPU) -> Planner:
        """The same planner on another GPU, sharing its traces (they do not depend on the GPU)."""
        other = Planner(self.settings, gpu, self.a, self.rates, self.say)
        other._train, other._heads, other._eval, other._eval_heads = (
            self._train, self._heads, self._eval, self._eval_heads
        )
        return other

    # ------------------------------------------------------------------ traces (memoised)
    def step_spec(self, job: Job) -> StepSpec:
        s = self.settings
        return StepSpec(
            method=job.method,
            num_classes=job.num_classes,
            options=job.options,
            arch=s.arch,
            image_size=s.image_size,
            batch_size=s.batch_size,
            precision=s.precision,
            # Compiled FlexAttention is not emulated (its CPU path is the unfused reference, which
            # would be modeled instead): a flex run is modeled with SDPA's kernel and says so.
            attention="sdpa",
            loss_resolution=s.loss_resolution,
            presence_head=job.presence_head,
        )

    def train_cost(self, job: Job) -> TrainCost:
        spec = self.step_spec(job)
        base_key = (job.method, job.options, job.presence_head)
        if base_key not in self._train:
            self.say(f"tracing a training step of {job.method} {dict(job.options) or ''}".rstrip())
            self._train[base_key] = trace_train(spec.with_k(2))
        base = self._train[base_key]
        if spec.num_classes == 2:
            return base
        head_key = (base.head_trainable, base.frozen_encoder, job.num_classes)
        if head_key not in self._heads:
            self._heads[head_key] = trace_head(spec, base.frozen_encoder)
        return base.at_k(self._heads[head_key], spec.num_classes)

    def eval_cost(self, job: Job) -> EvalCost:
        s = self.settings
        spec = StepSpec(**{**self.step_spec(job).__dict__, "batch_size": s.eval_batch_size})
        base_key = (job.method, job.options, job.presence_head)
        if base_key not in self._eval:
            self._eval[base_key] = trace_eval(spec.with_k(2), (s.image_size, s.image_size))
        head_key = (job.num_classes, job.max_image_hw, job.presence_head)
        if head_key not in self._eval_heads:
            self._eval_heads[head_key] = trace_eval(spec, job.max_image_hw, encoder=False)
        return self._eval[base_key].at_k(self._eval_heads[head_key])

    # ------------------------------------------------------------------ jobs
    def plan(self, jobs: Iterable[Job]) -> list[JobPlan]:
        jobs = list(jobs)
        out = []
        for i, job in enumerate(jobs):
            out.append(self.plan_train(job) if job.rule == "train" else self.plan_eval(job))
            if (i + 1) % 100 == 0:
                self.say(f"planned {i + 1}/{len(jobs)} jobs")
        return out

    def _workers(self, job: Job, images_per_s: float, batches: int) -> tuple[int, int, float]:
        """(workers, cpus, seconds to decode one batch) for a job that consumes ``images_per_s``
        over ``batches`` batches (a worker that would get fewer than its prefetch is not started)."""
        rate = self.rates.per_worker(job.image_format, job.image_hw)
        needed = min(math.ceil(images_per_s / rate), max(1, batches // self.a.prefetch_batches))
        cpus = min(self.a.max_cpus, max(self.a.min_cpus, needed + 2))  # + main process + pin thread
        workers = min(needed, cpus - 2)
        batch = self.settings.batch_size
        return workers, cpus, batch / (max(workers, 1) * rate)

    def _host(self, job: Job, workers: int, batch: int) -> int:
        h, w = job.image_hw
        s = self.settings.image_size
        item = 3 * s * s + s * s + h * w  # uint8 image, label, the raw label evaluation keeps
        in_flight = workers * self.a.prefetch_batches * batch * item * 2  # + its pinned copy
        return self.a.process_host_bytes + workers * self.a.worker_host_bytes + in_flight

    def plan_train(self, job: Job) -> JobPlan:
        a, s = self.a, self.settings
        cost = self.train_cost(job)
        cached = cost.frozen_encoder and s.encoder_cache == "auto"
        step_s = cost.roofline_s(self.gpu, cached) / a.roofline_efficiency
        workers, cpus, loader_s = self._workers(job, s.batch_size / step_s, job.steps)
        notes = []
        cache_host = cache_device = 0
        encode_s = 0.0
        if cached:
            one = cost.pieces["encode_one"]
            entry = one.end_live - one.start_live  # the one embedding the piece leaves alive
            pairs = min(2 * job.items, job.steps * s.batch_size)  # (image, flip) entries ever drawn
            # As EncoderCache fills them: the GPU first, then pinned host memory (power-of-two blocks)
            on_device = min(pairs, a.cache_device_bytes // entry)
            on_host = min(pairs - on_device, a.cache_host_cap_bytes // pinned_bytes(entry))
            cache_device, cache_host = on_device * entry, on_host * pinned_bytes(entry)
            stored = on_device + on_host
            draws = job.steps * s.batch_size
            recomputed = 0 if stored >= pairs else int(draws * (1 - stored / pairs))
            encode_s = (pairs + recomputed) * one.roofline_s(self.gpu) / a.roofline_efficiency
            if recomputed:
                notes.append(f"cache holds {stored} of {pairs} embeddings; {recomputed} recomputed")
        per_step = max(step_s, loader_s)
        if loader_s > step_s:
            notes.append(f"loader-bound: {workers} workers decode a batch in {loader_s * 1e3:.0f} ms")
        wall = job.steps * per_step + encode_s
        peak = cost.peak(cached) + cache_device
        need = int(peak * a.gpu_overhead + a.gpu_workspace_bytes)
        host = self._host(job, workers, s.batch_size) + cache_host
        return self._record(job, cost.flops(cached) * job.steps, cost.bytes(cached) * job.steps, peak, need,
                            host, workers, cpus, step_s, loader_s, wall, notes, cache_host)

    def plan_eval(self, job: Job) -> JobPlan:
        a, s = self.a, self.settings
        cost = self.eval_cost(job)
        gpu_s = cost.roofline_s(self.gpu, job.items) / a.roofline_efficiency
        images_per_s = job.items / gpu_s if gpu_s else 0.0
        batches = -(-job.items // s.eval_batch_size)
        workers, cpus, loader_s = self._workers(job, images_per_s, batches)
        wall = max(gpu_s, batches * loader_s)
        notes = []
        if job.rule == "detect":
            wall += job.items * a.detect_cpu_s_per_image
            notes.append(f"Masks2Boxes assumed {a.detect_cpu_s_per_image} s/image on the CPU")
        need = int(cost.peak * a.gpu_overhead + a.gpu_workspace_bytes)
        host = self._host(job, workers, s.eval_batch_size)
        return self._record(job, cost.flops(job.items), 0, cost.peak, need, host, workers, cpus,
                            gpu_s / max(batches, 1), loader_s, wall, notes, 0)

    def _record(
        self, job, flops, moved, peak, need, host, workers, cpus, step_s, loader_s, wall, notes, cache
    ):
        a = self.a
        runtime = max(a.min_runtime_min, math.ceil((wall + a.startup_s) * a.time_margin / 60))
        fits = need <= self.gpu.usable_bytes
        if not fits:
            notes.append(f"does not fit a {self.gpu.label}: needs {need / GiB:.1f} GiB")
        return JobPlan(
            key=job.key, rule=job.rule, dataset=job.dataset, method=job.method, variant=job.variant,
            seed=job.seed, unit=job.unit, num_classes=job.num_classes, items=job.items, steps=job.steps,
            size_source=job.size_source, gpu_peak_bytes=int(peak), gpu_need_bytes=int(need), fits_gpu=fits,
            host_peak_bytes=int(host), workers=workers, cpus=cpus, step_s=step_s, loader_s=loader_s,
            flops=int(flops), bytes_moved=int(moved), wall_s=wall,
            mem_mb=math.ceil(host * a.mem_margin / MiB), runtime_min=runtime,
            gpu_mem_mb=math.ceil(need / MiB), cache_host_mb=math.ceil(cache / MiB), notes=notes,
        )  # fmt: skip

    def gpu_hours(self, plans: list[JobPlan]) -> float:
        return sum(p.wall_s for p in plans) / 3600


# ----------------------------------------------------------------------------- summaries
def summary_rows(plans: list[JobPlan]) -> list[dict[str, Any]]:
    """One row per (rule, dataset): jobs, largest GPU/host need, requests, GPU-hours."""
    groups: dict[tuple[str, str], list[JobPlan]] = defaultdict(list)
    for p in plans:
        groups[(p.rule, p.dataset)].append(p)
    rows = []
    for (rule, dataset), ps in sorted(groups.items()):
        rows.append(
            {
                "rule": rule,
                "dataset": dataset,
                "jobs": len(ps),
                "items": max(p.items for p in ps),
                "gpu_peak_gib": max(p.gpu_peak_bytes for p in ps) / GiB,
                "gpu_need_gib": max(p.gpu_need_bytes for p in ps) / GiB,
                "host_peak_gib": max(p.host_peak_bytes for p in ps) / GiB,
                "mem_mb": max(p.mem_mb for p in ps),
                "cpus": max(p.cpus for p in ps),
                "workers": max(p.workers for p in ps),
                "runtime_min": max(p.runtime_min for p in ps),
                "wall_h_max": max(p.wall_s for p in ps) / 3600,
                "gpu_hours": sum(p.wall_s for p in ps) / 3600,
                "fits": all(p.fits_gpu for p in ps),
            }
        )
    return rows


def plan_document(plans: list[JobPlan], planner: Planner, config_digest: str) -> dict[str, Any]:
    """The JSON the CLI writes and the pipeline reads (``jobs`` keyed by :attr:`Job.key`)."""
    by_rule: dict[str, float] = defaultdict(float)
    for p in plans:
        by_rule[p.rule] += p.wall_s / 3600
    notes = []
    if planner.settings.attention != "sdpa":
        notes.append(
            f"training.speed.attention is {planner.settings.attention!r}: modeled with SDPA's memory-"
            "efficient kernel (compiled FlexAttention is not emulated; it builds no N×N mask)"
        )
    return {
        "schema": 1,
        "notes": notes,
        "gpu": asdict(planner.gpu),
        "config_digest": config_digest,
        "settings": asdict(planner.settings),
        "assumptions": asdict(planner.a),
        "loader_rates": asdict(planner.rates),
        "totals": {
            "jobs": len(plans),
            "gpu_hours": sum(by_rule.values()),
            "gpu_hours_by_rule": dict(by_rule),
            "not_fitting": [p.key for p in plans if not p.fits_gpu],
        },
        "jobs": {p.key: asdict(p) for p in plans},
    }


def method_table(settings: RunSettings, gpu: GPU, methods: list[str], ks: list[int]) -> list[dict[str, Any]]:
    """One uncached training step of each method at each class count K: peak GPU memory, FLOPs,
    bytes moved and roofline time (``mopeft plan --steps``; full_ft is the reference every PEFT
    method's peak must stay below)."""
    planner = Planner(settings, gpu)
    rows = []
    for method in methods:
        for k in ks:
            job = Job("train", "-", method, "default", 0, "main", (), k, 1, 1, "jpeg", (1024, 1024),
                      (1024, 1024), "-")  # fmt: skip
            cost = planner.train_cost(job)
            rows.append(
                {
                    "method": method,
                    "k": k,
                    "peak_gib": cost.peak(cached=False) / GiB,
                    "tflop": cost.flops(cached=False) / 1e12,
                    "gb_moved": cost.bytes(cached=False) / 1e9,
                    "roofline_ms": 1e3 * cost.roofline_s(gpu, cached=False),
                    "loss_and_decoder_gb": cost.pieces["head"].total_bytes / 1e9,
                }
            )
    return rows


def plan_summary(doc: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The plan without its per-job records: what docs/plan/ keeps and README's cost section reads."""
    return {**{k: v for k, v in doc.items() if k != "jobs"}, "rows": rows}


def gpu_hours_by_gpu(planner: Planner, jobs: list[Job]) -> dict[str, float]:
    """Total GPU-hours of the same jobs on every GPU of the table (the traces are shared)."""
    out = {}
    for key, gpu in GPUS.items():
        other = planner.on_gpu(gpu)
        out[key] = other.gpu_hours(other.plan(jobs))
    return out
