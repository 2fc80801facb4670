"""The ``mopeft`` console script.

Each sub-command lives in its own module under ``mopeft.commands`` exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported lazily so that
``mopeft score`` does not pay for importing torch and segment-anything.
Adding a command = one new module + one line in ``COMMANDS``.

Exit codes: 0 success; 2 a usage error (argparse) or a :class:`~mopeft.errors.UserError` (bad input,
printed as one line ``mopeft <cmd>: error: <message>`` naming the flag, key or file; with ``-v`` its
traceback too); 1 anything else, which is a bug and keeps Python's traceback. Only the user-error
types get the one-line treatment: a plain ``ValueError`` may be a reshape bug, and hiding its
traceback behind "error:" made bugs look like user mistakes.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import logging
import sys
import traceback

from mopeft.errors import UserError

__all__ = ["COMMANDS", "UserError", "build_parser", "main"]

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
    "export": "mopeft.commands.export",
}


def _command_help(module_name: str) -> str:
    """The module's ``HELP`` string, read from its source without importing it.

    Importing every command would make ``mopeft --help`` pay for torch. The value is read as the
    Python literal it is (not the text after ``HELP =``), so a help string wrapped in parentheses
    over several lines renders as itself rather than as ``(``.
    """
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        return "(not available)"
    with open(spec.origin, encoding="utf-8") as source:
        tree = ast.parse(source.read(), filename=spec.origin)
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "HELP" for t in node.targets)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            return node.value.value
    return ""


def _message(exc: UserError) -> str:
    """The error's message; a ``KeyError``-based one would otherwise print it in quotes."""
    if isinstance(exc, KeyError) and len(exc.args) == 1:
        return str(exc.args[0])
    return str(exc)


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, object | None]:
    """The parser, with only the chosen command's module imported (the others' help is read)."""
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
    """Run one command; user errors exit 2 with one line, other exceptions propagate (exit 1)."""
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
    except UserError as exc:
        # Bad input: one clear line naming the flag, key or file. Anything else is a bug and
        # propagates with its traceback (exit 1).
        if args.verbose:
            traceback.print_exc(file=sys.stderr)
        print(f"mopeft {args.command}: error: {_message(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
