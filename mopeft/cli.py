"""The ``mopeft`` console script.

Each sub-command lives in its own module under ``mopeft.commands`` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so that
``mopeft score`` does not pay for importing torch and segment-anything.
Adding a command = one new module + one line in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS: dict[str, str] = {
    "train": "mopeft.commands.train",
    "evaluate": "mopeft.commands.evaluate",
    "predict": "mopeft.commands.predict",
    "combine": "mopeft.commands.combine",
    "score": "mopeft.commands.score",
    "bootstrap": "mopeft.commands.bootstrap",
    "params": "mopeft.commands.params",
    "flops": "mopeft.commands.flops",
    "bench": "mopeft.commands.bench",
    "bench-loader": "mopeft.commands.bench_loader",
    "methods": "mopeft.commands.methods",
    "datasets": "mopeft.commands.datasets",
    "prepare": "mopeft.commands.prepare",
    "download": "mopeft.commands.download",
    "miniature": "mopeft.commands.miniature",
    "weights": "mopeft.commands.weights",
    "pretrain-tiny": "mopeft.commands.pretrain_tiny",
    "scenes": "mopeft.commands.scenes",
    "table": "mopeft.commands.table",
    "figure": "mopeft.commands.figure",
    "score-detections": "mopeft.commands.score_detections",
    "detect": "mopeft.commands.detect",
    "plan": "mopeft.commands.plan",
}


class UserError(Exception):
    """An error caused by bad input; printed without a traceback."""


def _command_help(module_name: str) -> str:
    # Help text is parsed from the module source to keep `mopeft --help` import-free.
    import importlib.util

    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return "(not available)"
    with open(spec.origin, encoding="utf-8") as source:
        for line in source:
            if line.startswith("HELP = "):
                return line.split("=", 1)[1].strip().strip("\"'")
    return ""


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    parser = argparse.ArgumentParser(
        prog="mopeft", description="Benchmark of parameter-efficient fine-tuning of SAM (MoPEFT study)."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for name, module_name in COMMANDS.items():
        if name == wanted:
            module = importlib.import_module(module_name)
            p = sub.add_parser(name, help=module.HELP, description=module.HELP)
            module.add_arguments(p)
        else:
            sub.add_parser(name, help=_command_help(module_name), add_help=False)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, module = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if module is None:
        parser.print_help()
        return 2
    try:
        return int(module.run(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as exc:
        # Bad input: one clear line naming the file, no traceback.
        print(f"mopeft {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
