"""Device selection and the settings every GPU job wants, in one place.

Training, evaluation and the benchmark must run the same numerics on a device: bf16 autocast on
CUDA, and TF32 tensor cores for whatever stays in fp32 (PyTorch leaves TF32 off for matmuls by
default, which would make any fp32 part of a step several times slower than it needs to be).
"""

from __future__ import annotations

import torch

from mopeft.errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else is taken literally."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available here; use --device cpu")
    return device


def configure(device: torch.device) -> None:
    """TF32 for fp32 matmuls and convolutions on CUDA (a no-op elsewhere)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def autocast(device: torch.device, enabled: bool = True) -> torch.autocast:
    """bf16 autocast on CUDA; plain fp32 on the CPU (CPU bf16 is slower and not what is benchmarked)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")
