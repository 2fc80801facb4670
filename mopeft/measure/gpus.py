"""The GPUs a job may run on: dense peak rates, memory bandwidth and memory, in one table.

Why one table: the resource model (``mopeft plan``: roofline time, what fits) and MFU
(``mopeft bench``) must divide by the same figures. Values are NVIDIA's datasheet figures for dense
tensor-core math (no 2:4 sparsity) and HBM/GDDR bandwidth; docs/performance.md lists the sources.
``usable_gib`` is what a job may allocate: the board's memory less what the driver and the CUDA
context take (about 1 GiB; an 80 GB H100 shows ~79.1 GiB total, and ~78 GiB are free to a process).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mopeft.errors import InputError


@dataclass(frozen=True)
class GPU:
    key: str  # the name `mopeft plan --gpu` takes
    label: str
    bf16_tflops: float  # dense tensor-core bf16 (fp32 accumulate)
    tf32_tflops: float  # dense tensor-core tf32
    fp32_tflops: float  # CUDA cores
    hbm_tbps: float  # memory bandwidth, TB/s (10^12 bytes)
    memory_gb: float  # board memory, GB (10^9 bytes)
    pattern: str  # matches torch.cuda.get_device_name()
    exclude: str | None = None

    @property
    def usable_bytes(self) -> int:
        """Memory a job may allocate: the board's less ~1 GiB for the driver and CUDA context."""
        return int(self.memory_gb * 1e9) - (1 << 30)

    def peak(self, precision: str) -> float:
        """Dense peak TFLOP/s for ``bf16``, ``tf32`` or ``fp32``."""
        return {"bf16": self.bf16_tflops, "tf32": self.tf32_tflops, "fp32": self.fp32_tflops}[precision]


GPUS: dict[str, GPU] = {
    g.key: g
    for g in (
        GPU("h100", "H100 SXM 80GB", 989.4, 494.7, 66.9, 3.35, 80, r"H100", r"NVL|PCIe"),
        GPU("h100-pcie", "H100 PCIe 80GB", 756.0, 378.0, 51.2, 2.0, 80, r"H100.*PCIe"),
        GPU("h200", "H200 SXM 141GB", 989.4, 494.7, 66.9, 4.8, 141, r"H200", r"NVL"),
        GPU("a100-40", "A100 SXM 40GB", 312.0, 156.0, 19.5, 1.555, 40, r"A100.*40GB"),
        GPU("a100-80", "A100 SXM 80GB", 312.0, 156.0, 19.5, 2.039, 80, r"A100(?!.*40GB)"),
        GPU("l40s", "L40S 48GB", 362.05, 183.0, 91.6, 0.864, 48, r"L40S"),
    )
}


def get_gpu(key: str) -> GPU:
    try:
        return GPUS[key]
    except KeyError:
        raise InputError(f"unknown GPU {key!r}; known: {', '.join(GPUS)}") from None


def gpu_for_device_name(device_name: str) -> GPU | None:
    """The table's entry for a ``torch.cuda.get_device_name()`` string, or None if unknown."""
    for gpu in GPUS.values():
        excluded = gpu.exclude is not None and re.search(gpu.exclude, device_name, re.I)
        if re.search(gpu.pattern, device_name, re.I) and not excluded:
            return gpu
    return None
