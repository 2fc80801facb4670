"""Shallow VPT: L prompt tokens at the first block only, propagated with the KMnP window treatment
(see mopeft.peft.shallow_vpt), plus decoder FT."""

from torch import nn

from mopeft.methods.base import Method, train_module
from mopeft.peft.shallow_vpt import ShallowVPTEncoder


class VPT(Method):
    name = "vpt"

    def install(self, model: nn.Module, opts: dict) -> None:
        model.image_encoder = ShallowVPTEncoder(model.image_encoder, opts["length"])
        train_module(model.image_encoder.prompts)
        train_module(model.mask_decoder)


METHOD = VPT()
