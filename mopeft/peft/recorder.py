"""GateRecorder: collect each gated block's per-image gate values during inference.

Why a forward hook on the whole model instead of logging inside the blocks: evaluation code stays
unaware of PEFT internals, and rows stay aligned with images across batches (one row per image).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mopeft.peft.block import GATE_NAMES, PEFTBlock


class GateRecorder:
    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.blocks = [m for m in model.modules() if isinstance(m, PEFTBlock) and len(m.gates)]
        self._rows: dict[str, list[np.ndarray]] = {}
        self._handle = None

    def __enter__(self) -> GateRecorder:
        self._rows = {}
        if self.blocks:
            self._handle = self.model.register_forward_hook(self._collect)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _collect(self, module: nn.Module, inputs: object, output: object) -> None:
        for name in GATE_NAMES:
            cols = [blk.last_gates[name] for blk in self.blocks if name in blk.last_gates]
            if cols:
                self._rows.setdefault(name, []).append(torch.stack(cols, dim=1).float().cpu().numpy())

    def values(self) -> dict[str, np.ndarray]:
        """{"lora_q","lora_v","prefix","adapter"} -> (N_images, n_layers) arrays; {} for ungated models."""
        return {name: np.concatenate(rows, axis=0) for name, rows in self._rows.items()}
