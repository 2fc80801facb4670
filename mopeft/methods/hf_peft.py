"""The HF ``peft`` family (``peft_<x>``): any of peft's layer tuners on the image encoder's linear
layers, plus decoder fine-tuning, trained like every other method. Beyond the study.

Why peft's own layers rather than a module per tuner: researchers now reach for DoRA, IA³, LoHa,
LoKr, OFT, FourierFT, ...; with peft's ``inject_adapter_in_model`` one config entry adds any of
them. What keeps them comparable with the study's methods:

* every block is first a :class:`mopeft.peft.block.PEFTBlock` (:func:`plain_blocks`), which *calls*
  ``attn.qkv``, ``attn.proj`` and ``mlp`` as modules; peft swaps those ``nn.Linear`` for its wrappers
  in place, so the same attention function (SDPA or FlexAttention) runs for every method;
* peft marks only its adapter tensors trainable; the mask decoder then trains as in the study's PEFT
  methods (decoder FT + class tokens), so a peft LoRA column reads like the study's LoRA column;
* checkpoints hold only ``requires_grad`` tensors (:func:`mopeft.peft.state.trainable_state_dict`);
  the tuner's configuration is the method's options, so the model config rebuilds it;
* the encoder now has trainable tensors, so the frozen-embedding cache stays off
  (:func:`mopeft.train.encoder_cache.encoder_is_frozen`);
* peft's adapter containers get ``param_role = "adapter"`` (peft calls them adapters), so
  ``mopeft params`` counts them as the encoder's PEFT part (Table 4.5).

Targets are matched inside the encoder's blocks only, by peft's rule (a module name equal to the
target or ending in ``.<target>``): ``qkv`` (default; the fused q/k/v projection the study's LoRA
adapts; a peft tuner adapts all three of q, k, v), ``proj`` (attention output), ``mlp.lin1``,
``mlp.lin2``. Matching inside the blocks keeps ``proj`` off the patch embedding's convolution.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any
from unittest import mock

import torch
from torch import nn

from mopeft.errors import InputError
from mopeft.methods.base import Method, plain_blocks, train_module
from mopeft.methods.registry import PeftMethodSpec, method_spec

PARAM_ROLE = "adapter"
# peft tuners this family cannot run faithfully, and why (the message a user gets).
UNSUPPORTED = {
    "ADALORA": "its rank allocation needs update_and_allocate() inside the training loop",
    "XLORA": "it mixes several trained LoRA adapters, it does not train one",
    "TRAINABLE_TOKENS": "it trains token embeddings, which SAM's image encoder has none of",
}


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise InputError(
            "HF peft is not installed: pip install 'mopeft[peft]' (or: pip install 'peft>=0.13,<1')"
        ) from None
    return peft


def supported_tuners() -> list[str]:
    """peft types (names) that can be injected into the encoder's layers by this family."""
    _peft()
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    from peft.tuners.tuners_utils import BaseTuner

    out = []
    for peft_type, tuner in PEFT_TYPE_TO_TUNER_MAPPING.items():
        name = getattr(peft_type, "value", str(peft_type))
        if name in UNSUPPORTED or peft_type not in PEFT_TYPE_TO_CONFIG_MAPPING:
            continue
        # Prompt learning has no layer tuner; shared state lives on the tuner object, which
        # inject_adapter_in_model does not keep (VeRA, VB-LoRA, ...).
        if not (isinstance(tuner, type) and issubclass(tuner, BaseTuner)) or tuner.uses_shared_state:
            continue
        if name == "SHADOW":  # refused by inject_adapter_in_model
            continue
        out.append(name)
    return sorted(out)


def peft_config(method: str, opts: dict[str, Any]) -> Any:
    """The peft config object of a method's resolved options; a mistake names the option."""
    _peft()
    import json

    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    tuner = opts["tuner"]
    if tuner in UNSUPPORTED:
        raise InputError(f"method {method}: peft tuner {tuner} is not supported here: {UNSUPPORTED[tuner]}")
    known = supported_tuners()
    if tuner not in known:
        raise InputError(
            f"method {method}: unknown or unsupported peft tuner {tuner!r}; known: {', '.join(known)}"
        )
    cls = next(c for t, c in PEFT_TYPE_TO_CONFIG_MAPPING.items() if getattr(t, "value", t) == tuner)
    options = json.loads(opts["peft_options"])
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise InputError(
            f"method {method}: peft {cls.__name__} has no option(s) {unknown}; known: "
            f"{', '.join(sorted(fields - {'target_modules', 'peft_type', 'task_type'}))}"
        )
    targets = opts["target_modules"].split(",")
    try:
        return cls(target_modules=targets, **options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"method {method}: peft {cls.__name__}({options}): {exc}") from None


def inject(blocks: nn.Module, config: Any, method: str) -> int:
    """Inject peft's layers into ``blocks`` in place; returns how many modules it wrapped."""
    peft = _peft()
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        with _fake_safe(blocks):
            peft.inject_adapter_in_model(config, blocks)
    except ValueError as exc:
        raise InputError(
            f"method {method}: peft could not adapt {sorted(config.target_modules)} ({exc}); the encoder "
            f"block's linear layers are attn.qkv, attn.proj, mlp.lin1, mlp.lin2"
        ) from None
    wrapped = 0
    for module in blocks.modules():
        if isinstance(module, BaseTunerLayer):
            wrapped += 1
            for attr in module.adapter_layer_names:
                part = getattr(module, attr, None)
                if isinstance(part, nn.Module):
                    part.param_role = PARAM_ROLE
    return wrapped


def _fake_safe(blocks: nn.Module) -> contextlib.AbstractContextManager:
    """The resource model (mopeft.measure.step_model) builds models under ``FakeTensorMode``, where
    ``Module.to`` swaps every parameter, which fails. peft moves each new adapter to its base
    layer's device and dtype; built in the same device context and default dtype, they are there
    already. So under fake tensors a ``Module.to`` that would change nothing returns the module."""
    from torch._subclasses.fake_tensor import is_fake

    if not any(is_fake(p) for p in blocks.parameters()):
        return contextlib.nullcontext()
    module_to = nn.Module.to

    def to(self: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        device, dtype, *_ = torch._C._nn._parse_to(*args, **kwargs)
        tensors = [*self.parameters(), *self.buffers()]
        same_device = device is None or all(t.device == device for t in tensors)
        same_dtype = dtype is None or all(t.dtype == dtype for t in tensors if t.is_floating_point())
        if same_device and same_dtype:
            return self
        return module_to(self, *args, **kwargs)

    return mock.patch.object(nn.Module, "to", to)


class HFPeft(Method):
    """One ``peft_<x>`` method: what it is lies in its options (:class:`PeftMethodSpec`)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def spec(self) -> PeftMethodSpec:
        spec = method_spec(self.name)
        assert isinstance(spec, PeftMethodSpec), self.name
        return spec

    def install(self, model: nn.Module, opts: dict[str, Any]) -> None:
        plain_blocks(model)
        config = peft_config(self.name, opts)
        blocks = model.image_encoder.blocks
        inject(blocks, config, self.name)
        if not any(p.requires_grad for p in blocks.parameters()):
            raise InputError(
                f"method {self.name}: peft {opts['tuner']} on {opts['target_modules']} made no encoder "
                "tensor trainable; check target_modules and the tuner's options"
            )
        train_module(model.mask_decoder)


def family_method(name: str) -> HFPeft:
    """The method object of ``name`` (the registry's :meth:`PeftMethodSpec.implementation`)."""
    return HFPeft(name)
