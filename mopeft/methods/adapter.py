"""Bottleneck adapter after the FFN residual of every block (Z + W_up ReLU(W_down Z)) + decoder FT."""

from mopeft.methods.base import PEFTMethod


class AdapterMethod(PEFTMethod):
    name = "adapter"
    use_adapter = True


METHOD = AdapterMethod()
