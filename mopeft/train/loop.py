"""The training loop: Adam, CE + Dice, bf16 autocast on CUDA, deterministic and resumable, and
written so that a GPU spends its time computing.

Determinism is built from the step index, not from iterator state: the batch of step ``t`` is a
slice of a permutation seeded by (seed, epoch) (:class:`mopeft.data.loading.loader.StepBatchSampler`), and
its flip augmentation is seeded by (seed, t). Together with the optimiser state saved in the resume
file, a run killed at any point and started again reaches bit-identical final weights on the CPU,
with or without DataLoader workers.

Speed: a DataLoader with workers and pinned memory decodes the next batches while the device works;
uint8 pixels are normalised, padded and flipped on the device; the loss is read back only every
``log_every`` steps (no host-device sync per step), and with it each step's row of the live
``metrics.csv`` (:mod:`mopeft.train.metrics_log`: loss, lr, gradient norm, throughput, data wait,
peak GPU memory; appended and flushed, so it can be watched during the run); methods whose encoder
is frozen train from cached image embeddings (:mod:`mopeft.train.encoder_cache`, within host/device
memory budgets past which embeddings are recomputed, bit-identically). ``timing`` in the returned
:class:`TrainResult` says how long the loop waited for data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mopeft.data.loading.loader import SegmentationPairs, StepBatchSampler, batch_indices, make_loader
from mopeft.data.loading.preprocess import flip_content, to_model_input
from mopeft.device import autocast, configure, resolve_device
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.peft.state import load_trainable_state_dict, trainable_state_dict
from mopeft.progress import progress
from mopeft.train.encoder_cache import CACHE_DTYPES, DEFAULT_DEVICE_MB, MIB, EncoderCache, encoder_is_frozen
from mopeft.train.losses import presence_loss, presence_targets, segmentation_loss
from mopeft.train.metrics_log import METRICS_FILE, TENSORBOARD_DIR, MetricsLog
from mopeft.train.optim import make_optimizer
from mopeft.train.resume import data_digest, digest, discard, read_resume, write_resume

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "TrainSettings", "batch_indices", "resolve_device", "steps_for_epochs", "train"]


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    ce_weight: float = 0.2
    dice_weight: float = 0.8
    loss_resolution: str = "full"  # "full": logits upsampled to the label; "logits": label downsampled
    presence_weight: float = 1.0  # class-MLP BCE, only for models with a presence head (FAIR-1M)
    seed: int = 0
    checkpoint_every: int = 100
    hflip: bool = True
    device: str = "auto"
    # Speed only: none of these changes the result (the fingerprint leaves them out).
    workers: int = 0
    log_every: int = 25
    encoder_cache: str = "auto"  # "auto": on when the encoder is frozen; "off"
    compile: str | None = None  # a torch.compile backend ("inductor"), or None for eager
    # The encoder cache's budgets in MiB (past them, embeddings are recomputed: slower, same bits).
    cache_host_mb: float | None = None  # None: half of what this process may use (default_host_budget)
    cache_device_mb: float | None = None  # None: DEFAULT_DEVICE_MB on a GPU (ignored on the CPU)
    # NOT speed only: "bf16" rounds the cached embeddings (opt in, changes the numerics).
    cache_dtype: str = "fp32"
    # Also write metrics.csv's rows as TensorBoard event files (``tensorboard/`` in the unit folder).
    tensorboard: bool = False


RUNTIME_ONLY = ("device", "checkpoint_every", "workers", "log_every", "encoder_cache", "compile")
# Left out of the fingerprint rather than set to None (they came after the first resume files): the
# budgets and the TensorBoard copy never change the result; cache_dtype enters only where it rounds
# (fingerprint_parts()).
_UNFINGERPRINTED = ("cache_host_mb", "cache_device_mb", "cache_dtype", "tensorboard")


@dataclass
class TrainResult:
    losses: list[float]
    timing: dict = field(default_factory=dict)


def steps_for_epochs(num_items: int, batch_size: int, epochs: int) -> int:
    return math.ceil(num_items / batch_size) * epochs


def fingerprint_parts(
    model: SemanticSAM,
    settings: TrainSettings,
    dataset: SegmentationPairs,
    base: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What makes a training run this one, field by field (kept in the resume file, so that a
    mismatch names what changed): the settings that change the result, the method and its
    options, the trainable tensors' names, the training data's content (:func:`data_digest`) and
    ``base``, the model's provenance (base weights' sha256 or "random init", init seed, ...) as
    the caller knows it; the model object alone cannot tell which weights it was built from."""
    fields = asdict(settings) | dict.fromkeys(RUNTIME_ONLY)
    for key in _UNFINGERPRINTED:
        del fields[key]
    if use_encoder_cache(model, settings) and settings.cache_dtype != "fp32":
        fields["cache_dtype"] = settings.cache_dtype  # rounded embeddings: a different run
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    return json.loads(
        json.dumps(
            {
                "settings": fields,
                "method": model.method,
                "options": model.method_options,
                "model": dict(base) if base is not None else None,
                "data": data_digest(dataset.pairs),
                "trainable": hashlib.sha256("\n".join(trainable).encode()).hexdigest(),
            },
            sort_keys=True,
            default=str,
        )
    )  # through JSON: plain types, equal to what a resume file gives back


def fingerprint(
    model: SemanticSAM,
    settings: TrainSettings,
    dataset: SegmentationPairs,
    base: Mapping[str, Any] | None = None,
) -> str:
    """Identifies a training run so a resume file from a different run is never picked up."""
    return digest(fingerprint_parts(model, settings, dataset, base))


def flips_for_step(settings: TrainSettings, step: int, count: int) -> torch.Tensor:
    """The horizontal-flip draw of step ``step`` (a pure function of seed and step)."""
    gen = torch.Generator().manual_seed(settings.seed * 7_368_787 + step)
    return (torch.rand(count, generator=gen) < 0.5) & settings.hflip


def use_encoder_cache(model: SemanticSAM, settings: TrainSettings) -> bool:
    if settings.encoder_cache not in ("auto", "off"):
        raise ValueError(f"encoder_cache must be 'auto' or 'off', got {settings.encoder_cache!r}")
    if settings.cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"cache_dtype must be one of {sorted(CACHE_DTYPES)}, got {settings.cache_dtype!r}")
    return settings.encoder_cache == "auto" and encoder_is_frozen(model)


def train(
    model: SemanticSAM,
    dataset: SegmentationPairs,
    settings: TrainSettings,
    resume_path: str | Path,
    on_step: Callable[[int, torch.Tensor], None] | None = None,
    base: Mapping[str, Any] | None = None,
    metrics_path: str | Path | None = None,
) -> TrainResult:
    """Train in place; returns the loss of every step and the loop's timing. Saves a resume file
    every ``checkpoint_every`` steps and at the end (atomically), and resumes from it only if it
    belongs to this run (:mod:`mopeft.train.resume`); ``base``: the model's provenance for the
    fingerprint (see :func:`fingerprint_parts`). Writes one row per step to ``metrics_path``
    (default: ``metrics.csv`` beside the resume file, i.e. in the unit's output folder) as it goes."""
    resume_path = Path(resume_path)
    metrics_path = resume_path.with_name(METRICS_FILE) if metrics_path is None else Path(metrics_path)
    metrics = MetricsLog(
        metrics_path, metrics_path.with_name(TENSORBOARD_DIR) if settings.tensorboard else None
    )
    device = resolve_device(settings.device)
    configure(device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"method {model.method!r} has no trainable parameters")
    opt = make_optimizer(params, settings.lr, settings.weight_decay, device)
    parts = fingerprint_parts(model, settings, dataset, base)
    fp = digest(parts)
    start, losses = 0, []
    state = read_resume(resume_path, parts)
    if state is not None:
        fresh = trainable_state_dict(model)
        try:
            load_trainable_state_dict(model, state["trainable"], source=str(resume_path))
            opt.load_state_dict(state["optimizer"])
            start, losses = int(state["step"]), [float(x) for x in state["losses"]]
            if not 0 <= start <= settings.steps:
                raise ValueError(f"step {start} outside 0..{settings.steps}")
        except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
            # Right fingerprint, wrong content: back to the fresh model and optimiser, from step 0.
            load_trainable_state_dict(model, fresh)
            opt = make_optimizer(params, settings.lr, settings.weight_decay, device)
            start, losses = 0, []
            why = (str(exc) or type(exc).__name__).splitlines()[0][:200]
            discard(resume_path, f"its tensors do not fit this run ({why})")
        else:
            log.info("resuming from %s at step %d/%d", resume_path, start, settings.steps)
    cache = None
    if use_encoder_cache(model, settings):
        device_mb = DEFAULT_DEVICE_MB if settings.cache_device_mb is None else settings.cache_device_mb
        cache = EncoderCache(
            device,
            device_bytes=int(device_mb * MIB),
            host_bytes=None if settings.cache_host_mb is None else int(settings.cache_host_mb * MIB),
            num_images=len(dataset),
            flip_states=2 if settings.hflip else 1,
            dtype=settings.cache_dtype,
        )
    forward, encode = model.forward_with_tokens, model.encode
    if settings.compile:
        forward = torch.compile(forward, backend=settings.compile)
        encode = torch.compile(encode, backend=settings.compile)
    loader = make_loader(
        dataset,
        StepBatchSampler(len(dataset), settings.batch_size, settings.seed, start, settings.steps),
        workers=settings.workers,
        pin_memory=device.type == "cuda",
    )
    metrics.start(start)  # after the resume decision: truncates, or drops the rows after `start`
    try:
        return _loop(
            model, dataset, settings, device, opt, params, cache, forward, encode, loader,
            start, losses, resume_path, fp, parts, metrics, on_step,
        )  # fmt: skip
    finally:
        metrics.close()


def _grad_norm(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """Total L2 norm of the trainable gradients, left on the device (read back with the losses):
    one fused multi-tensor kernel plus a norm of the per-tensor norms, no sync."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(grads)]))


def _loop(
    model: SemanticSAM,
    dataset: SegmentationPairs,
    settings: TrainSettings,
    device: torch.device,
    opt: torch.optim.Optimizer,
    params: list[torch.nn.Parameter],
    cache: EncoderCache | None,
    forward: Callable[..., Any],
    encode: Callable[..., Any],
    loader: Any,
    start: int,
    losses: list[float],
    resume_path: Path,
    fp: str,
    parts: Mapping[str, Any],
    metrics: MetricsLog,
    on_step: Callable[[int, torch.Tensor], None] | None,
) -> TrainResult:
    """The steps ``start``..``settings.steps`` of :func:`train` (split off so that the metrics
    file is closed however the loop ends)."""
    frozen = encoder_is_frozen(model)
    decode = model.decode_with_tokens
    bar = progress(total=settings.steps, initial=start, desc="train", unit="step", mininterval=2)
    pending: list[torch.Tensor] = []
    pending_norms: list[torch.Tensor] = []
    rows: list[dict[str, Any]] = []  # this log interval's rows, completed at its read-back
    interval_images, t_interval = 0, time.perf_counter()
    waited = timed = 0.0
    timed_steps, warmup = 0, 2  # the first batches include worker start-up
    batches = iter(loader)
    t_step = t_loop = time.perf_counter()
    for step in range(start, settings.steps):
        t_wait = time.perf_counter()
        batch = next(batches)
        t_got = time.perf_counter()
        flip = flips_for_step(settings, step, len(batch["indices"]))  # host tensor: no sync to test it
        images = batch["images"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        sizes = batch["sizes"].to(device, non_blocking=True)
        flip_dev = flip.to(device, non_blocking=True) if bool(flip.any()) else None
        x = to_model_input(images, sizes, flip_dev)
        if flip_dev is not None:
            labels = flip_content(labels, sizes, flip_dev)
        with autocast(device):
            if cache is not None:
                emb = cache.embeddings(batch["indices"].tolist(), flip.tolist(), x, encode)
                logits, tokens = decode(emb)
            elif frozen:
                # Without the cache, still one image at a time: what the cache stores, so that the
                # two runs are the same computation (batched GEMMs can differ in the last bits).
                with torch.no_grad():
                    emb = torch.cat([encode(x[i : i + 1]) for i in range(len(x))])
                logits, tokens = decode(emb)
            else:
                logits, tokens = forward(x)
        loss = segmentation_loss(
            logits, labels, settings.ce_weight, settings.dice_weight, settings.loss_resolution
        )
        if model.presence_head is not None:
            presence = model.presence_head(tokens.float())
            target = presence_targets(labels, model.num_classes)
            loss = loss + settings.presence_weight * presence_loss(presence, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        pending_norms.append(_grad_norm(params))  # before the step: the gradient it applies
        opt.step()
        pending.append(loss.detach())
        done = step + 1
        interval_images += len(batch["indices"])
        rows.append({"step": done, "lr": opt.param_groups[0]["lr"], "data_wait_s": t_got - t_wait})
        save = done % settings.checkpoint_every == 0 or done == settings.steps
        if save or done % settings.log_every == 0:
            new = torch.stack(pending).float().cpu().tolist()  # one sync per log interval
            norms = torch.stack(pending_norms).cpu().tolist()
            losses.extend(new)
            pending.clear()
            pending_norms.clear()
            t_now = time.perf_counter()  # after the sync: the interval's device work is done
            for row, value, norm in zip(rows, new, norms, strict=True):
                row.update(loss=value, grad_norm=norm)
            # Throughput and peak memory are interval quantities: on the interval's last row only.
            rows[-1]["images_per_s"] = interval_images / max(t_now - t_interval, 1e-9)
            if device.type == "cuda":
                rows[-1]["gpu_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
            metrics.append(rows)  # before the resume file: the rows of every saved step are on disk
            rows, interval_images, t_interval = [], 0, t_now
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if save:
            _save_resume(resume_path, model, opt, done, losses, fp, parts)
        bar.update(1)
        now = time.perf_counter()
        if step - start >= warmup:
            waited += t_got - t_wait
            timed += now - t_step
            timed_steps += 1
        t_step = now
        if on_step is not None:
            on_step(step, loss.detach())
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    timing = {
        "loop_s": time.perf_counter() - t_loop,
        "steps_timed": timed_steps,
        "step_s": timed / timed_steps if timed_steps else None,
        "data_wait_s": waited / timed_steps if timed_steps else None,
        "data_wait_fraction": waited / timed if timed else None,
        "encoder_cache": cache is not None,
        "workers": settings.workers,
        "compile": settings.compile,
        **({"cache": cache.summary()} if cache is not None else {}),
    }
    log.info(
        "trained %d steps; %s s/step, %.0f %% waiting for data",
        settings.steps - start,
        f"{timing['step_s']:.3f}" if timing["step_s"] else "?",
        100 * (timing["data_wait_fraction"] or 0),
    )
    if cache is not None:
        c = timing["cache"]
        log.info(
            "encoder cache: %d embeddings stored (%.0f MiB device, %.0f MiB host), %d hits, %d encoder "
            "passes of which %d recomputed what the budget could not keep",
            c["entries"],
            c["device_bytes"] / MIB,
            c["host_bytes"] / MIB,
            c["hits"],
            c["misses"],
            c["recomputed"],
        )
    return TrainResult(losses, timing)


def _save_resume(
    path: Path,
    model: SemanticSAM,
    opt: torch.optim.Optimizer,
    step: int,
    losses: list[float],
    fp: str,
    parts: Mapping[str, Any],
) -> None:
    write_resume(
        path,
        {
            "fingerprint": fp,
            "fingerprint_parts": dict(parts),
            "step": step,
            "losses": losses,
            "trainable": trainable_state_dict(model),
            "optimizer": opt.state_dict(),
        },
    )
