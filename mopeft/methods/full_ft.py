"""Full fine-tuning: everything trains except the prompt encoder, which only supplies the constant
"no prompt" embeddings and would receive no useful gradient anyway."""

from torch import nn

from mopeft.methods.base import Method, plain_blocks, train_module


class FullFT(Method):
    name = "full_ft"
    description = "image encoder + mask decoder trainable (prompt encoder frozen)"
    defaults: dict = {}  # noqa: RUF012

    def install(self, model: nn.Module, opts: dict) -> None:
        plain_blocks(model)
        train_module(model.image_encoder)
        train_module(model.mask_decoder)


METHOD = FullFT()
