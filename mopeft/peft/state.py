"""The trainable part of a model as tensors: what checkpoints and resume files hold.

Only tensors with ``requires_grad`` plus the buffers PEFT modules need at inference (folded prefix
tokens) are stored; the frozen base is rebuilt from its weights file or seed. Kept next to the PEFT
modules because only they know which of their buffers are state (``param_role``).
"""

from __future__ import annotations

import torch
from torch import nn

from mopeft.errors import InputError
from mopeft.peft.prefix import DeepPrompt


def peft_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    # Buffers that PEFT modules need at inference (folded prefix tokens); SAM's own buffers are rebuilt.
    out = {}
    for name, module in model.named_modules():
        if hasattr(module, "param_role"):
            for bname, buf in module.named_buffers(prefix=name):
                out[bname] = buf
    return out


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only tensors with requires_grad, plus PEFT buffers; detached CPU copies."""
    out = {name: p.detach().cpu().clone() for name, p in model.named_parameters() if p.requires_grad}
    out.update({name: b.detach().cpu().clone() for name, b in peft_buffers(model).items()})
    return out


def load_trainable_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint"
) -> None:
    """Load trainable tensors; an unknown or missing key or a wrong shape is an error naming ``source``."""
    if any(k.endswith(".folded_tokens") for k in state):
        for module in model.modules():  # a folded checkpoint goes into a folded-shaped model
            if isinstance(module, DeepPrompt):
                module.prepare_folded()
    targets = dict(model.named_parameters())
    targets.update(peft_buffers(model))
    unknown = sorted(set(state) - set(targets))
    if unknown:
        raise InputError(f"{source}: unknown keys for this model ({model.method}): {unknown[:5]}")
    expected = {n for n, p in model.named_parameters() if p.requires_grad} | set(peft_buffers(model))
    missing = sorted(expected - set(state))
    if missing:  # they would silently keep their fresh (untrained) initial values
        raise InputError(
            f"{source}: missing trainable tensors for this model ({model.method}): {missing[:5]}"
        )
    with torch.no_grad():
        for key, value in state.items():
            if targets[key].shape != value.shape:
                raise InputError(
                    f"{source}: {key} has shape {tuple(value.shape)}, "
                    f"model expects {tuple(targets[key].shape)}"
                )
            targets[key].copy_(value)


def fold_prefixes(model: nn.Module) -> int:
    """Fold every reparametrised prefix into plain tokens; returns how many were folded."""
    folded = 0
    for module in model.modules():
        if isinstance(module, DeepPrompt) and module.reparam is not None:
            module.fold()
            folded += 1
    return folded
