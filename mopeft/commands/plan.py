"""mopeft plan: every GPU job's memory, CPUs and time, modeled without a GPU and without data."""

from __future__ import annotations

import argparse
import csv
import io
import logging
import sys
from pathlib import Path

from mopeft.errors import InputError
from mopeft.measure.gpus import GPUS

HELP = "model every train/evaluate/detect job of a run (GPU and host memory, time) on a named GPU"
log = logging.getLogger(__name__)
SCHEMA = Path("workflow/schemas/config.schema.yaml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--configfile",
        nargs="+",
        type=Path,
        default=[Path("config/config.yaml")],
        help="the run's config file(s), merged in order as Snakemake does",
    )
    p.add_argument("--gpu", default="h100", choices=sorted(GPUS), help="GPU model the jobs run on")
    p.add_argument(
        "--json",
        type=Path,
        default=None,
        help="plan JSON (default: results/<run>/plan.json, where the pipeline looks for it)",
    )
    p.add_argument("--csv", type=Path, default=None, help="also write the per-dataset summary as CSV")
    p.add_argument("--md", type=Path, default=None, help="also write the summary as Markdown")
    p.add_argument("--summary", type=Path, default=None,
                   help="also write the plan without per-job records (docs/plan/, README's cost section)")
    p.add_argument("--all-gpus", action="store_true", help="also total the GPU-hours on every GPU model")
    p.add_argument("--steps", default=None, metavar="K,K,...",
                   help="instead of a plan: one training step of every method (or --methods) at these "
                   "class counts: peak GPU memory, TFLOP, GB moved, roofline ms")
    p.add_argument("--methods", default="all", help="methods for --steps (comma-separated, or all)")
    p.add_argument("--limit", type=int, default=None, help="plan only the first N jobs (a quick look)")


def run(args: argparse.Namespace) -> int:
    from mopeft.io import write_json, write_text
    from mopeft.measure.gpus import get_gpu
    from mopeft.plan.jobs import config_digest, load_config, plan_path, run_grid, run_jobs
    from mopeft.plan.model import (
        Planner,
        RunSettings,
        gpu_hours_by_gpu,
        plan_document,
        plan_summary,
        summary_rows,
    )
    from mopeft.plan.report import markdown_summary

    config = load_config(args.configfile, SCHEMA if SCHEMA.exists() else None)
    if args.steps:
        return _steps(args, config)
    if note := run_grid(config).note_line():
        print(note, file=sys.stderr)  # the same line the workflow prints
    jobs = run_jobs(config)[: args.limit]
    planner = Planner(
        RunSettings.from_config(config),
        get_gpu(args.gpu),
        progress=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(f"planning {len(jobs)} GPU jobs on {planner.gpu.label}", file=sys.stderr)
    plans = planner.plan(jobs)
    doc = plan_document(plans, planner, config_digest(config))
    if args.all_gpus:
        doc["totals"]["gpu_hours_by_gpu"] = gpu_hours_by_gpu(planner, jobs)
    out = args.json or plan_path(config)
    write_json(out, doc)
    rows = summary_rows(plans)
    text = markdown_summary(doc, rows)
    if args.md:
        write_text(args.md, text)
    if args.summary:
        write_json(args.summary, plan_summary(doc, rows))
    if args.csv:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        write_text(args.csv, buf.getvalue())
    print(text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _steps(args: argparse.Namespace, config: dict) -> int:
    from tabulate import tabulate

    from mopeft.measure.gpus import get_gpu
    from mopeft.methods.registry import METHOD_SPECS
    from mopeft.plan.model import RunSettings, method_table

    methods = list(METHOD_SPECS) if args.methods == "all" else args.methods.split(",")
    unknown = [m for m in methods if m not in METHOD_SPECS]
    if unknown:
        raise InputError(f"--methods: unknown {unknown}; known: {', '.join(METHOD_SPECS)}")
    try:
        ks = [int(k) for k in args.steps.split(",")]
    except ValueError:
        raise InputError(f"--steps takes class counts like 2,8,201, got {args.steps!r}") from None
    settings = RunSettings.from_config(config)
    rows = method_table(settings, get_gpu(args.gpu), methods, ks)
    print(tabulate([r.values() for r in rows], headers=list(rows[0]), tablefmt="github", floatfmt=".2f"))
    print(
        f"\n{settings.arch} @ {settings.image_size}², batch {settings.batch_size}, {settings.precision}, "
        f"{settings.attention} attention, loss at {settings.loss_resolution} resolution; "
        f"roofline on {args.gpu}"
    )
    if args.json:
        from mopeft.io import write_json

        write_json(args.json, {"settings": settings.__dict__, "gpu": args.gpu, "rows": rows})
    return 0
