"""VPT-Deep = K/V prefix from L prompt tokens per block through the frozen k/v projections, trained with a
per-layer reparametrisation MLP (``reparam_hidden``; 0 = learn the tokens directly), plus decoder FT.
Call ``fold_prefixes(model)`` before deployment to keep only the L x C tokens per block."""

from mopeft.methods.base import PEFTMethod


class VPTDeep(PEFTMethod):
    name = "vpt_deep"
    description = "VPT-Deep / prefix tuning in every block + decoder FT"
    defaults = {"length": 20, "reparam_hidden": 512}  # noqa: RUF012
    use_prefix = True


METHOD = VPTDeep()
