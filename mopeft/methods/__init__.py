"""METHODS registry: adding a method = one module exposing ``METHOD`` + one line here."""

from __future__ import annotations

from mopeft.methods import adapter, baseline, decoder_ft, full_ft, lora, mopeft, vpt, vpt_deep
from mopeft.methods.base import Method

METHODS: dict[str, Method] = {
    m.METHOD.name: m.METHOD for m in (baseline, decoder_ft, full_ft, lora, vpt, vpt_deep, adapter, mopeft)
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {sorted(METHODS)}") from None


__all__ = ["METHODS", "Method", "get_method"]
