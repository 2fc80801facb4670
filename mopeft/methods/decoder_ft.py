"""Decoder fine-tuning: the image encoder and prompt encoder stay frozen; the whole mask decoder
(two-way transformer, upscaling, IoU context token, class tokens, shared hypernetwork) trains."""

from torch import nn

from mopeft.methods.base import Method, plain_blocks, train_module


class DecoderFT(Method):
    name = "decoder_ft"
    description = "mask decoder fully trainable, encoders frozen"
    defaults: dict = {}  # noqa: RUF012

    def install(self, model: nn.Module, opts: dict) -> None:
        plain_blocks(model)
        train_module(model.mask_decoder)


METHOD = DecoderFT()
