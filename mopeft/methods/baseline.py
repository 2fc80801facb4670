"""Frozen SAM with a trained K-class read-out.

The study never defines its "vanilla SAM" baseline. We take the smallest model that can emit K
classes: SAM's encoder, prompt encoder, decoder transformer and upscaling stay frozen; the K class
tokens and the ONE hypernetwork MLP they share (initialised from SAM's hypernetwork 0) train, i.e.
a prompt-free read-out head on frozen SAM features (ViT-B: 256·K + 139,808 parameters).

Why the hypernetwork as well as the tokens: with the tokens alone the read-out can only move along
directions that the frozen two-way transformer passes through, and on a small random-init model
the loss does not move at all within a demo's budget; the shared MLP is the head proper.
"""

from torch import nn

from mopeft.methods.base import Method, plain_blocks, train_module


class Baseline(Method):
    name = "baseline"
    description = "frozen SAM; only the K class tokens and their shared hypernetwork MLP train"
    defaults: dict = {}  # noqa: RUF012

    def install(self, model: nn.Module, opts: dict) -> None:
        plain_blocks(model)
        model.mask_decoder.class_tokens.weight.requires_grad_(True)
        train_module(model.mask_decoder.hypernetwork)


METHOD = Baseline()
