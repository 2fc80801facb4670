"""mopeft train: fine-tune one method on one unit of a prepared dataset.

The output folder is locked for the whole run (:mod:`mopeft.train.lock`): a second `mopeft train`
on it (an orphaned SLURM job's replacement) fails at once, naming the job that holds it.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from mopeft.commands.options import add_set_argument, parse_sets
from mopeft.data.images import check_label_files
from mopeft.data.loading.loader import SegmentationPairs
from mopeft.data.prepared.units import load_unit
from mopeft.device import resolve_device
from mopeft.environment import record_environment
from mopeft.errors import InputError
from mopeft.io import read_json, write_json
from mopeft.methods import METHODS, method_spec
from mopeft.methods.checkpoint import build_from_config, model_config, save_model, weights_label
from mopeft.model.arch import ARCHS, get_arch
from mopeft.peft.attention import attention_backend
from mopeft.peft.state import fold_prefixes
from mopeft.train.encoder_cache import CACHE_DTYPES, DEFAULT_DEVICE_MB
from mopeft.train.lock import unit_lock
from mopeft.train.loop import TrainSettings, steps_for_epochs, train

HELP = "fine-tune SAM with one method on one prepared dataset unit; writes OUT/model.safetensors"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, type=Path, help="prepared dataset folder (with meta.json)")
    p.add_argument("--unit", default="main", help="main, a PAXRay-4 task, or fold<i>")
    p.add_argument("--kfold", type=int, default=2, help="folds for datasets without a train split")
    p.add_argument(
        "--method", required=True, help=f"{', '.join(METHODS)}, or peft_<name> (HF peft: --set tuner=...)"
    )
    add_set_argument(p)
    p.add_argument(
        "--arch",
        default="vit_b",
        choices=sorted(ARCHS),
        help="SAM variant: vit_b (the study's ViT-B), vit_l, vit_h, or tiny (few small blocks: CPU tests, "
        "the demo)",
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="input side in pixels (default: the architecture's own)"
    )
    p.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="base SAM weights (.pth, e.g. from `mopeft weights`); without it the base model is RANDOM init",
    )
    p.add_argument("--checkpoint-sha256", default=None, help="expected sha256 (default: the official ViT-B)")
    steps = p.add_mutually_exclusive_group(required=True)
    steps.add_argument("--steps", type=int)
    steps.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--ce-weight", type=float, default=0.2)
    p.add_argument("--dice-weight", type=float, default=0.8)
    p.add_argument(
        "--loss-resolution",
        choices=["full", "logits"],
        default="full",
        help="full: logits upsampled to the label (keeps thin structures); logits: label downsampled",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random-init base model")
    p.add_argument("--checkpoint-every", type=int, default=100, help="resume-file interval (steps)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--cache-dtype",
        choices=sorted(CACHE_DTYPES),
        default="fp32",
        help="fp32: the encoder cache keeps the exact embeddings; bf16: rounds them (half the memory, "
        "CHANGES THE NUMERICS: the decoder trains on rounded embeddings)",
    )
    speed = p.add_argument_group("speed (none of these changes the result)")
    speed.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader worker processes (default: 4 on CUDA, 0 on CPU; at most the usable CPUs - 1)",
    )
    speed.add_argument("--log-every", type=int, default=25, help="read the loss back every N steps")
    speed.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write metrics.csv's rows as TensorBoard event files in the unit's tensorboard/ folder "
        "(needs the tensorboard extra: pip install 'mopeft[tensorboard]')",
    )
    speed.add_argument(
        "--encoder-cache",
        choices=["auto", "off"],
        default="auto",
        help="auto: reuse image embeddings when the encoder is frozen (baseline, decoder_ft)",
    )
    speed.add_argument(
        "--cache-host-mb",
        type=float,
        default=None,
        metavar="MIB",
        help="host memory for cached embeddings, MiB (the whole cache on the CPU, the spill from the GPU "
        "on CUDA); beyond it embeddings are recomputed. Default: half of min(MemAvailable, cgroup limit)",
    )
    speed.add_argument(
        "--cache-device-mb",
        type=float,
        default=None,
        metavar="MIB",
        help=f"GPU memory for cached embeddings, MiB (default {DEFAULT_DEVICE_MB}; unused on the CPU)",
    )
    speed.add_argument(
        "--compile",
        nargs="?",
        const="inductor",
        default=None,
        metavar="BACKEND",
        help="torch.compile the model's forward (default backend inductor; aot_eager for a quick check)",
    )
    speed.add_argument(
        "--attention", choices=["sdpa", "flex"], default="sdpa", help="attention kernel of the encoder"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder: model.safetensors, train_log.json")


def _usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (what SLURM's cpus_per_task and taskset
    leave it), not the node's core count; os.cpu_count() where affinity is unknown (macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _workers(args: argparse.Namespace) -> int:
    """DataLoader workers: 4 on CUDA, 0 on the CPU, capped by the usable CPUs minus one for the main
    process. Workers beyond the job's CPUs do not decode faster: they take cores from the process
    that feeds the GPU, and each holds its own memory (a 2-CPU job would run 4 workers + 1 main
    process on 2 cores). An explicit --workers above the cap is honoured with a warning: the
    user may know better (e.g. reads that wait on a network file system, not on a CPU)."""
    cap = max(_usable_cpus() - 1, 0)
    if args.workers is not None:
        if args.workers < 0:
            raise InputError(f"--workers must be >= 0, got {args.workers}")
        if args.workers > cap:
            log.warning(
                "--workers %d: this process may use %d CPUs, %d left beside the main process; the "
                "workers will compete for them (--workers %d or fewer avoids that)",
                args.workers,
                cap + 1,
                cap,
                cap,
            )
        return args.workers
    return min(4, cap) if resolve_device(args.device).type == "cuda" else 0


def _cache_mb(args: argparse.Namespace) -> tuple[float | None, float | None]:
    """--cache-host-mb / --cache-device-mb, checked (None: the loop's defaults)."""
    for flag, value in (("--cache-host-mb", args.cache_host_mb), ("--cache-device-mb", args.cache_device_mb)):
        if value is not None and not value >= 0:  # also NaN
            raise InputError(f"{flag} must be >= 0 MiB (0 caches nothing there), got {value}")
    return args.cache_host_mb, args.cache_device_mb


def base_identity(cfg: dict) -> dict:
    """The model's provenance as the resume fingerprint sees it: the base weights by content
    (sha256, not path: a moved file is the same run), the init seed (it draws every new tensor),
    and the rest of the config but the weights' path."""
    return {**{k: v for k, v in cfg.items() if k != "weights"}, "weights_sha256": weights_label(cfg)}


def run(args: argparse.Namespace) -> int:
    workers = _workers(args)  # flags first: a bad value fails before any data is read
    cache_host_mb, cache_device_mb = _cache_mb(args)
    with unit_lock(args.out):  # before anything is read: a second job on this unit fails at once
        return _run_locked(args, workers, cache_host_mb, cache_device_mb)


def _run_locked(
    args: argparse.Namespace, workers: int, cache_host_mb: float | None, cache_device_mb: float | None
) -> int:
    meta = read_json(args.data / "meta.json")
    unit = load_unit(args.data, args.unit, args.kfold)
    if not unit.train:
        raise InputError(f"{args.data}: unit {args.unit!r} has no training images")
    # Every label's values, before any model is built: a bad file fails now, naming itself.
    check_label_files([label for _, label in unit.train], unit.num_classes)
    if args.checkpoint is None:
        log.warning(
            "no --checkpoint: training %s on a RANDOMLY INITIALISED %s, not on SAM's pretrained weights; "
            "its numbers say nothing about fine-tuning SAM (fetch weights with `mopeft weights --out DIR` "
            "and pass --checkpoint DIR/<file>.pth)",
            args.method,
            args.arch,
        )
    options = method_spec(args.method).options(parse_sets(args.sets))  # validated, typed
    official = get_arch(args.arch).checkpoint  # no --checkpoint-sha256: the arch's official digest
    sha = args.checkpoint_sha256 or (official.sha256 if args.checkpoint is not None and official else None)
    cfg = model_config(
        args.arch,
        unit.num_classes,
        args.method,
        options,
        args.image_size or get_arch(args.arch).default_image_size,
        str(args.checkpoint) if args.checkpoint else None,
        sha,
        args.init_seed,
        list(unit.classes),
        presence_head=bool(meta.get("presence_head", False)),  # the dataset spec's (FAIR-1M: True)
        dataset=meta.get("dataset"),  # evaluate/detect refuse other data
    )
    model = build_from_config(cfg)
    dataset = SegmentationPairs(unit.train, cfg["image_size"])
    steps = args.steps or steps_for_epochs(len(dataset), args.batch_size, args.epochs)
    settings = TrainSettings(
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        ce_weight=args.ce_weight,
        dice_weight=args.dice_weight,
        loss_resolution=args.loss_resolution,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        device=args.device,
        workers=workers,
        log_every=args.log_every,
        encoder_cache=args.encoder_cache,
        compile=args.compile,
        cache_host_mb=cache_host_mb,
        cache_device_mb=cache_device_mb,
        cache_dtype=args.cache_dtype,
        tensorboard=args.tensorboard,
    )
    log.info(
        "training %s on %s/%s: %d images, %d steps",
        args.method,
        meta["dataset"],
        args.unit,
        len(dataset),
        steps,
    )
    with attention_backend(args.attention):
        result = train(model, dataset, settings, args.out / "train_state.pt", base=base_identity(cfg))
    train_info = {
        "dataset": meta["dataset"],
        "unit": args.unit,
        "steps": steps,
        "seed": args.seed,
        "num_train_images": len(dataset),
        "synthetic": bool(meta.get("synthetic")),
    }
    log_json = {**train_info, "losses": result.losses, "timing": result.timing}
    log_json["environment"] = record_environment(args.out)  # the package list beside it
    write_json(args.out / "train_log.json", log_json)
    # Inference needs only the prefix tokens, not their reparametrisation MLP: fold before saving.
    fold_prefixes(model)
    save_model(args.out / "model.safetensors", model.cpu(), cfg, {"train": train_info})
    (args.out / "train_state.pt").unlink(missing_ok=True)
    return 0
