"""The study's optimiser, built in one place so that `mopeft train` and `mopeft bench` time the same
implementation: Adam with L2 weight decay, fused on CUDA (one kernel for every tensor), foreach on
the CPU (fused Adam has no CPU kernel on every build)."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def make_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, device: torch.device | str
) -> torch.optim.Adam:
    """Adam(lr, weight_decay) over ``params``; fused when they live on a CUDA device."""
    cuda = torch.device(device).type == "cuda"
    impl = {"fused": True} if cuda else {"foreach": True}
    return torch.optim.Adam(list(params), lr=lr, weight_decay=weight_decay, **impl)
