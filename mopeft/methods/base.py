"""Method interface: a name, default options, and ``apply`` that installs modules and sets requires_grad.

Why the freezing lives here: "what trains" IS the method's definition in this study, so each method
states it in one place, and ``apply`` starts by freezing everything so nothing trains by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from mopeft.methods.registry import MethodSpec, method_spec
from mopeft.peft.adapter import Adapter
from mopeft.peft.block import PEFTBlock
from mopeft.peft.lora import LoRAQV
from mopeft.peft.prefix import DeepPrompt


class Method:
    """What trains, and the modules that make it train; name, label and defaults are the registry's."""

    name: str = ""

    @property
    def spec(self) -> MethodSpec:
        return method_spec(self.name)

    @property
    def defaults(self) -> Mapping[str, Any]:
        return self.spec.defaults

    def options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        return self.spec.options(options)

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
                prefix_gate=opts.get("prefix_gate", "scale"),
            )
        for blk in enc.blocks:
            for part in (blk.lora, blk.prefix, blk.adapter, blk.gates):
                if part is not None:
                    train_module(part)
        train_module(model.mask_decoder)
