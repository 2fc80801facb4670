"""``mopeft bench``: train-step and inference time of the methods side by side, relative to full FT."""

from __future__ import annotations

import argparse
import logging

HELP = "time methods' train steps and inference side by side vs full_ft; MFU (1 multiply-add (MAC) = 2 FLOP)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mopeft.model.arch import ARCHS

    parser.add_argument("--arch", default="tiny", choices=sorted(ARCHS), help="architecture")
    parser.add_argument("--methods", default="all", help="'all' or a comma list, e.g. lora,full_ft")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="METHOD:KEY=VALUE",
        help="an option of one method, e.g. lora:r=16 or peft_dora:tuner=LORA (repeatable; a peft_<x> "
        "method needs its tuner, see `mopeft train --set`)",
    )
    parser.add_argument("--image-size", type=int, default=None, help="input side (default: the arch's)")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="timed repetitions per method (median)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed repetitions first")
    parser.add_argument("--num-classes", type=int, default=8)
    parser.add_argument(
        "--dtype", choices=("bf16", "fp32"), default=None, help="default: bf16 on cuda, fp32 on cpu"
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU timing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="peak TFLOP/s that MFU is taken against (default: dense datasheet figure for H100/H200/A100 "
        "in the run's precision, see mopeft.measure.mfu; none on CPU, so MFU is omitted there). MFU = "
        "model FLOP of a step (torch's FlopCounterMode, backward included; 1 multiply-add (MAC) = 2 FLOP, "
        "so a forward's GFLOP is twice its GMAC in `mopeft flops`) / median time / peak",
    )
    parser.add_argument(
        "--attention",
        choices=("sdpa", "flex"),
        default="sdpa",
        help="the encoder's attention kernel (flex: compiled FlexAttention on CUDA; warm up to compile)",
    )
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT (atomically)")


def method_sets(items: list[str] | None) -> dict[str, dict[str, str]]:
    """``["peft_dora:tuner=LORA", "lora:r=8"]`` -> {"peft_dora": {"tuner": "LORA"}, "lora": {"r": "8"}}:
    one bench job times several methods, so each option names its method (the rule passes the
    config's peft methods' options this way)."""
    from mopeft.commands.options import parse_sets
    from mopeft.errors import InputError

    by_method: dict[str, list[str]] = {}
    for item in items or []:
        method, sep, option = item.partition(":")
        if not sep or not method.strip() or "=" in method:
            raise InputError(f"--set expects METHOD:KEY=VALUE (e.g. lora:r=8), got {item!r}")
        by_method.setdefault(method.strip(), []).append(option)
    return {method: parse_sets(options) for method, options in by_method.items()}


def run(args: argparse.Namespace) -> int:
    import torch

    from mopeft.errors import InputError
    from mopeft.io import write_json
    from mopeft.measure.bench import BenchConfig, format_table, run_bench

    if args.threads is not None:
        if args.threads < 1:
            raise InputError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    methods = (
        [] if args.methods.strip() == "all" else [m.strip() for m in args.methods.split(",") if m.strip()]
    )
    cfg = BenchConfig(
        arch=args.arch,
        methods=methods,
        method_options=method_sets(args.sets),
        image_size=args.image_size,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup=args.warmup,
        num_classes=args.num_classes,
        dtype=args.dtype,
        device=args.device,
        seed=args.seed,
        peak_tflops=args.peak_tflops,
        attention=args.attention,
    )
    log = logging.getLogger("mopeft.bench")
    result = run_bench(cfg, progress=log.info)
    print(format_table(result))
    if args.json:
        from pathlib import Path

        from mopeft.environment import record_environment

        # The timings' machine: Table 4.5 marks timings from more than one GPU model.
        result["environment"] = record_environment(Path(args.json).resolve().parent)
        write_json(args.json, result)
    return 0
