"""The ``--set KEY=VALUE`` method options shared by train, params and flops."""

from __future__ import annotations

import argparse

from mopeft.errors import InputError


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="method option, e.g. r=16 (repeatable)",
    )


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``["r=8", "alpha=16"]`` -> {"r": "8", "alpha": "16"}; the method coerces each value to the
    type of its default and rejects unknown keys (mopeft.methods.base.Method.options)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out
