"""Method interface: a name, default options, and ``apply`` that installs modules and sets requires_grad.

Why the freezing lives here: "what trains" IS the method's definition in this study, so each method
states it in one place, and ``apply`` starts by freezing everything so nothing trains by accident.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mopeft.peft.adapter import Adapter
from mopeft.peft.block import PEFTBlock
from mopeft.peft.lora import LoRAQV
from mopeft.peft.prefix import DeepPrompt


def _coerce(method: str, key: str, value: Any, default: Any) -> Any:
    # CLI `--set k=v` gives strings; convert to the default's type so options are typed and hashable.
    if isinstance(value, str) and not isinstance(default, str):
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "1")
            return type(default)(value)
        except ValueError:
            raise ValueError(
                f"method {method}: option {key}={value!r} is not a {type(default).__name__}"
            ) from None
    if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"method {method}: option {key}={value} must be an integer")
        return int(value)
    return value


class Method:
    name: str = ""
    description: str = ""
    defaults: dict[str, Any] = {}  # noqa: RUF012 - read-only class-level defaults

    def options(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """Defaults overridden by ``options``; unknown keys are an error naming the method."""
        options = dict(options or {})
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise ValueError(
                f"method {self.name}: unknown option(s) {unknown}; known: {sorted(self.defaults)}"
            )
        return {k: _coerce(self.name, k, options.get(k, d), d) for k, d in self.defaults.items()}

    def apply(self, model: nn.Module, options: dict[str, Any] | None = None) -> dict[str, Any]:
        """Install this method into a fresh SemanticSAM; returns the resolved options."""
        if getattr(model, "method_applied", False):
            raise ValueError(f"a method ({model.method}) was already applied to this model")
        opts = self.options(options)
        for p in model.parameters():
            p.requires_grad_(False)
        self.install(model, opts)
        model.method = self.name
        model.method_options = opts
        model.method_applied = True
        return opts

    def install(self, model: nn.Module, opts: dict[str, Any]) -> None:
        raise NotImplementedError


def train_module(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def plain_blocks(model: nn.Module) -> None:
    """Wrap every encoder block in a PEFTBlock without parts: the stock-block methods then run the
    same attention function as every PEFT method (numerically SAM's stock attention)."""
    enc = model.image_encoder
    for i, blk in enumerate(enc.blocks):
        enc.blocks[i] = PEFTBlock(blk)


class PEFTMethod(Method):
    """Encoder PEFT in every block (via PEFTBlock) + the whole mask decoder trainable (as decoder_ft)."""

    use_lora = use_prefix = use_adapter = gated = False

    def install(self, model: nn.Module, opts: dict[str, Any]) -> None:
        enc = model.image_encoder
        dim = enc.pos_embed.shape[-1]
        patch = enc.patch_embed.proj.kernel_size[0]
        for i, blk in enumerate(enc.blocks):
            enc.blocks[i] = PEFTBlock(
                blk,
                lora=LoRAQV(dim, opts["r"], opts.get("alpha")) if self.use_lora else None,
                prefix=DeepPrompt(opts["length"], dim, opts["reparam_hidden"], patch)
                if self.use_prefix
                else None,
                adapter=Adapter(dim, opts["dmid"]) if self.use_adapter else None,
                gated=self.gated,
                prefix_gate=opts.get("prefix_gate", "logit"),
            )
        for blk in enc.blocks:
            for part in (blk.lora, blk.prefix, blk.adapter, blk.gates):
                if part is not None:
                    train_module(part)
        train_module(model.mask_decoder)
