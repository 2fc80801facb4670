"""VPT-Deep = K/V prefix from L prompt tokens per block through the frozen k/v projections, trained with a
per-layer reparametrisation MLP (``reparam_hidden``; 0 = learn the tokens directly), plus decoder FT.
Call ``fold_prefixes(model)`` before deployment to keep only the L x C tokens per block."""

from mopeft.methods.base import PEFTMethod


class VPTDeep(PEFTMethod):
    name = "vpt_deep"
    use_prefix = True


METHOD = VPTDeep()
