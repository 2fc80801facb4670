"""LoRA on q and v of every encoder block (through the fused qkv), scaling alpha / r (default alpha = r,
i.e. 1, like SAMed), plus decoder fine-tuning."""

from mopeft.methods.base import PEFTMethod


class LoRA(PEFTMethod):
    name = "lora"
    use_lora = True


METHOD = LoRA()
