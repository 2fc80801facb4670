"""`mopeft pretrain-tiny`: pretrain the tiny SAM on generated scenes (the packaged demo weights).

Deterministic on one CPU: the same settings write a byte-identical checkpoint. The packaged file
(`mopeft.model.weights.TINY_ASSET`) was written by this command with its defaults.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from mopeft.errors import InputError

HELP = "pretrain the tiny SAM on generated object scenes; writes a SAM-layout checkpoint + summary"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from mopeft.train.pretrain import PretrainSettings

    d = PretrainSettings()
    parser.add_argument(
        "--out", type=Path, required=True, help="checkpoint file (.pth); OUT.json gets the summary"
    )
    parser.add_argument("--steps", type=int, default=d.steps)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--pool", type=int, default=d.pool, help="distinct training scenes")
    parser.add_argument("--held-out", type=int, default=d.held_out, help="scenes for the reported IoU")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--seed", type=int, default=d.seed)


def run(args: argparse.Namespace) -> int:
    from mopeft.io import write_json
    from mopeft.train.pretrain import PretrainSettings, pretrain, save_state

    settings = PretrainSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        pool=args.pool,
        held_out=args.held_out,
        lr=args.lr,
        seed=args.seed,
    )
    if settings.pool < settings.batch_size:
        raise InputError(f"--pool ({settings.pool}) must be at least --batch-size ({settings.batch_size})")
    state, summary = pretrain(settings)
    sha = save_state(args.out, state)
    summary["sha256"] = sha
    write_json(Path(f"{args.out}.json"), summary)
    log.info(
        "held-out foreground IoU %.3f -> %.3f in %.0f s",
        summary["held_out_iou_before"],
        summary["held_out_iou_after"],
        summary["seconds"],
    )
    print(json.dumps({"checkpoint": str(args.out), "sha256": sha}))
    return 0
