"""The methods of the benchmark, declared once: name, label, defaults, and where the code lives.

Torch-free on purpose: the Snakemake DAG (wildcard constraints, config checks), the CLI's choices,
the report's column labels and option validation all read this table at start-up, and none of
them should pay for importing torch. The implementation (``module``, which defines ``METHOD``, a
:class:`mopeft.methods.base.Method`) is imported only when a model is built.

Adding a method = one module under ``mopeft/methods/`` + one line in ``METHOD_SPECS``.

Beyond the study, a *family*: every name ``peft_<x>`` is an HF ``peft`` tuner (:class:`PeftMethodSpec`,
implemented by :mod:`mopeft.methods.hf_peft`) whose whole definition travels in its options
(``tuner``, ``target_modules``, ``peft_options``). A run declares such methods in its config
(``peft_methods``: name -> tuner, options, target_modules, label); :func:`peft_method_options` turns
one entry into the options, so adding a tuner to a run is one config entry and no code.
"""

from __future__ import annotations

import importlib
import json
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


# ----------------------------------------------------------------------------- the HF peft family
PEFT_PREFIX = "peft_"
PEFT_MODULE = "mopeft.methods.hf_peft"
# What the study's LoRA adapts (the fused q/k/v projection of every encoder block); the other names
# segment-anything's ViT block has are `proj` (attention output), `mlp.lin1`, `mlp.lin2`.
PEFT_DEFAULT_TARGETS = ("qkv",)
PEFT_TARGETS = ("qkv", "proj", "mlp.lin1", "mlp.lin2")


def is_peft_method(name: str) -> bool:
    """A name of the HF peft family (``peft_<x>``), beyond the study's methods."""
    return name.startswith(PEFT_PREFIX) and len(name) > len(PEFT_PREFIX)


def canonical_json(value: Any) -> str:
    """One spelling per value (sorted keys, no spaces): equal tuner options give equal strings, so
    the cell's options, its resume fingerprint and the DAG's params compare them as text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class PeftMethodSpec(MethodSpec):
    """A ``peft_<x>`` method: its options are the peft type (``tuner``, e.g. LORA, IA3, LOHA), the
    encoder modules it adapts (``target_modules``, comma-separated) and the keyword arguments of
    peft's config class (``peft_options``, a JSON object), all strings: typed, hashable, and given
    on the command line as ``--set`` like any method option."""

    def options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        opts = super().options(options)
        where = f"method {self.name}"
        tuner = str(opts["tuner"]).strip().upper()
        if not tuner:
            raise InputError(
                f"{where}: option tuner is not set; declare it in the config "
                f"(peft_methods.{self.name}.tuner, e.g. LORA, IA3, LOHA) or pass --set tuner=LORA"
            )
        targets = opts["target_modules"]
        if isinstance(targets, str):
            targets = [t for t in (x.strip() for x in targets.split(",")) if t]
        if not targets:
            raise InputError(f"{where}: option target_modules is empty; e.g. {PEFT_DEFAULT_TARGETS[0]}")
        peft_options = opts["peft_options"]
        if isinstance(peft_options, str):
            try:
                peft_options = json.loads(peft_options or "{}")
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{where}: option peft_options is not JSON ({exc.msg}): {peft_options!r}"
                ) from None
        if not isinstance(peft_options, dict):
            raise InputError(f"{where}: option peft_options must be a JSON object, got {peft_options!r}")
        reserved = sorted(set(peft_options) & {"target_modules", "peft_type", "task_type"})
        if reserved:
            raise InputError(
                f"{where}: peft_options must not set {reserved}: the options tuner and target_modules do"
            )
        return {
            "tuner": tuner,
            "target_modules": ",".join(targets),
            "peft_options": canonical_json(peft_options),
        }

    def implementation(self) -> Any:
        """The family's method object for this name (one class serves every ``peft_<x>``)."""
        return importlib.import_module(self.module).family_method(self.name)


def peft_spec(name: str) -> PeftMethodSpec:
    """The spec of a ``peft_<x>`` name: what it is comes from its options, not from the name."""
    return PeftMethodSpec(
        name,
        name,
        "an HF peft tuner on the image encoder's linear layers + decoder FT (beyond the study)",
        PEFT_MODULE,
        {"tuner": "", "target_modules": ",".join(PEFT_DEFAULT_TARGETS), "peft_options": "{}"},
    )


def peft_method_options(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The method options of a config ``peft_methods`` entry ({tuner, options, target_modules,
    label}), canonical: the options `mopeft train` is given and the cells record."""
    if not is_peft_method(name):
        raise InputError(f"config peft_methods.{name}: a peft method's name starts with {PEFT_PREFIX!r}")
    given = {
        "tuner": entry.get("tuner", ""),
        "target_modules": ",".join(entry.get("target_modules") or PEFT_DEFAULT_TARGETS),
        "peft_options": canonical_json(dict(entry.get("options") or {})),
    }
    try:
        return peft_spec(name).options(given)
    except InputError as exc:
        raise InputError(f"config peft_methods.{name}: {exc}") from None


def peft_set_args(options: Mapping[str, Any], method: str | None = None) -> list[str]:
    """The ``--set k=v`` words that give a peft method its options on the command line; with
    ``method``, ``--set METHOD:k=v`` for a command that takes several methods' options (bench)."""
    tag = f"{method}:" if method else ""
    return [word for key in sorted(options) for word in ("--set", f"{tag}{key}={options[key]}")]


def known_methods(peft_methods: Mapping[str, Any] | None = None) -> list[str]:
    """The registry's methods plus the peft methods a config declares (its ``peft_methods``)."""
    return [*METHOD_SPECS, *(peft_methods or {})]


def method_spec(name: str) -> MethodSpec:
    try:
        return METHOD_SPECS[name]
    except KeyError:
        if is_peft_method(name):
            return peft_spec(name)
        raise InputError(
            f"unknown method {name!r}; known: {', '.join(METHOD_SPECS)}, or {PEFT_PREFIX}<name> "
            "(an HF peft tuner, config peft_methods)"
        ) from None
