"""The benchmark's methods: the torch-free registry (:mod:`mopeft.methods.registry`) and
:func:`get_method`, which imports a method's implementation only when a model is built."""

from __future__ import annotations

from typing import Any

from mopeft.methods.registry import METHOD_SPECS, MethodSpec, method_spec

METHODS = METHOD_SPECS  # name -> MethodSpec (label, defaults, options())


def get_method(name: str) -> Any:
    """The implementation (a :class:`mopeft.methods.base.Method`) of method ``name``."""
    return method_spec(name).implementation()


__all__ = ["METHODS", "METHOD_SPECS", "MethodSpec", "get_method", "method_spec"]
