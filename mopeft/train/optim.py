"""The study's optimiser, built in one place so that `mopeft train` and `mopeft bench` time the same
implementation: Adam with L2 weight decay, fused (one kernel over every tensor) on CUDA and on the
CPU alike. Measured on one CPU thread over 90 M parameters (ViT-B full fine-tuning): fused 0.10 s per
step, foreach 0.59 s, the per-tensor loop 0.35 s; a slow full-FT optimizer step would bias every
PEFT/full-FT time ratio low."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def make_optimizer(
    params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float, device: torch.device | str
) -> torch.optim.Adam:
    """Adam(lr, weight_decay) over ``params`` with the fused implementation (CPU or CUDA)."""
    del device  # the fused kernel exists for both; kept so callers state where the step runs
    return torch.optim.Adam(list(params), lr=lr, weight_decay=weight_decay, fused=True)
