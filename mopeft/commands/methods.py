"""`mopeft methods`: list the fine-tuning methods and their default options."""

from __future__ import annotations

import argparse
import json

HELP = "list fine-tuning methods and their default options"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    from mopeft.methods import METHODS

    info = {
        name: {"label": m.label, "defaults": dict(m.defaults), "description": m.description}
        for name, m in METHODS.items()
    }
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        for name, item in info.items():
            opts = " ".join(f"{k}={v}" for k, v in item["defaults"].items())
            print(f"{name:<11} {item['description']}" + (f"  [{opts}]" if opts else ""))
        print(_peft_family_line())
    return 0


def _peft_family_line() -> str:
    """The HF peft family (beyond the study): declared per run in the config, not listed above."""
    from mopeft.errors import InputError
    from mopeft.methods.hf_peft import supported_tuners

    try:
        tuners = ", ".join(supported_tuners())
    except InputError:
        tuners = "none: pip install 'mopeft[peft]'"
    return (
        "peft_<name> an HF peft tuner on the encoder's linear layers + decoder FT, beyond the study "
        f"(config peft_methods; --set tuner=... target_modules=qkv peft_options=JSON); tuners: {tuners}"
    )
