"""The methods of the benchmark, declared once: name, label, defaults, and where the code lives.

Torch-free on purpose: the Snakemake DAG (wildcard constraints, config checks), the CLI's choices,
the report's column labels and option validation all read this table at start-up, and none of
them should pay for importing torch. The implementation (``module``, which defines ``METHOD``, a
:class:`mopeft.methods.base.Method`) is imported only when a model is built.

Adding a method = one module under ``mopeft/methods/`` + one line in ``METHOD_SPECS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mopeft.errors import InputError


@dataclass(frozen=True)
class MethodSpec:
    name: str
    label: str  # the column label in the tables
    description: str
    module: str  # implementation module exposing METHOD
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Defaults overridden by ``options``, typed like the defaults; unknown keys name the method."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise InputError(
                f"method {self.name}: unknown option(s) {unknown}; known: {sorted(self.defaults)}"
            )
        return {k: coerce(self.name, k, options.get(k, d), d) for k, d in self.defaults.items()}

    def implementation(self) -> Any:
        """The method object that installs itself into a model (imports torch)."""
        return importlib.import_module(self.module).METHOD


def coerce(method: str, key: str, value: Any, default: Any) -> Any:
    """CLI ``--set k=v`` gives strings; convert to the default's type so options are typed and hashable.

    A ``None`` default means "derived from another option" (LoRA's alpha = r): a value given for it
    is a number."""
    if default is None and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise InputError(f"method {method}: option {key}={value!r} is not a number") from None
    if isinstance(value, str) and not isinstance(default, str) and default is not None:
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return type(default)(value)
        except ValueError:
            raise InputError(
                f"method {method}: option {key}={value!r} is not a {type(default).__name__}"
            ) from None
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if not value.is_integer():
            raise InputError(f"method {method}: option {key}={value} must be an integer")
        return int(value)
    return value


METHOD_SPECS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        MethodSpec(
            "baseline",
            "Baseline",
            "frozen SAM; only the K class tokens and their shared hypernetwork MLP train",
            "mopeft.methods.baseline",
        ),
        MethodSpec(
            "decoder_ft",
            "decoderFT",
            "mask decoder fully trainable, encoders frozen",
            "mopeft.methods.decoder_ft",
        ),
        MethodSpec(
            "full_ft",
            "Full FT",
            "image encoder + mask decoder trainable (prompt encoder frozen)",
            "mopeft.methods.full_ft",
        ),
        # alpha None = r: the scaling alpha / r is 1 at any rank (an ablation of r changes the rank only).
        MethodSpec(
            "lora",
            "LoRA",
            "LoRA on q,v of every block + decoder FT",
            "mopeft.methods.lora",
            {"r": 8, "alpha": None},
        ),
        MethodSpec(
            "vpt", "VPT", "shallow VPT (first block) + decoder FT", "mopeft.methods.vpt", {"length": 20}
        ),
        MethodSpec(
            "vpt_deep",
            "VPT Deep",
            "VPT-Deep / prefix tuning in every block + decoder FT",
            "mopeft.methods.vpt_deep",
            {"length": 20, "reparam_hidden": 512},
        ),
        MethodSpec(
            "adapter",
            "Adapter",
            "bottleneck adapter in every block + decoder FT",
            "mopeft.methods.adapter",
            {"dmid": 64},
        ),
        MethodSpec(
            "mopeft",
            "MoPEFT",
            "gated LoRA + prefix + adapter (UniPELT gates) + decoder FT",
            "mopeft.methods.mopeft",
            {"r": 8, "length": 20, "reparam_hidden": 512, "dmid": 64, "prefix_gate": "scale"},
        ),
        # This project's addition (not the study's): the prefix gate as log G_P on the prefix logits,
        # which can switch the prefix off (scaling P_K, P_V by G_P cannot; docs/methods.md).
        MethodSpec(
            "mopeft_logit",
            "MoPEFT-logit*",
            "MoPEFT with the prefix gate on the logits (log G_P), this project's variant",
            "mopeft.methods.mopeft_logit",
            {"r": 8, "length": 20, "reparam_hidden": 512, "dmid": 64, "prefix_gate": "logit"},
        ),
    )
}


def method_spec(name: str) -> MethodSpec:
    try:
        return METHOD_SPECS[name]
    except KeyError:
        raise InputError(f"unknown method {name!r}; known: {', '.join(METHOD_SPECS)}") from None
