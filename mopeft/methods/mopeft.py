"""MoPEFT: LoRA(q,v) + VPT-Deep prefix + adapter in every block, each behind UniPELT gates
(4 x Linear(C,1) per block: LoRA q, LoRA v, prefix, adapter), plus decoder FT. The LoRA gates replace
alpha/r; ``prefix_gate`` = "scale" (default: the study's and UniPELT's P_K·G_P, P_V·G_P) or "logit"
(log G_P added to the prefix logits; ``mopeft_logit``)."""

from mopeft.methods.base import PEFTMethod


class MoPEFT(PEFTMethod):
    name = "mopeft"
    use_lora = use_prefix = use_adapter = gated = True


METHOD = MoPEFT()
