"""MoPEFT with the prefix gate applied to the prefix logits (log G_P), this project's variant.

The study (and UniPELT) scale the prefix keys and values by G_P; at G_P = 0 the zero keys still take
softmax mass, so the prefix can dilute attention but never switch off. Adding log G_P to the prefix
columns' logits makes G_P -> 0 remove the prefix exactly and G_P = 1 the ungated prefix. Everything
else is MoPEFT; only the registry default ``prefix_gate = "logit"`` differs.
"""

from mopeft.methods.mopeft import MoPEFT


class MoPEFTLogit(MoPEFT):
    name = "mopeft_logit"


METHOD = MoPEFTLogit()
