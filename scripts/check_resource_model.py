#!/usr/bin/env python3
"""The resource model against reality on this CPU: one real fp32 LoRA training step (forward, loss,
backward) measured three ways, and the same step on fake tensors.

* the CPU allocator's own record (torch.profiler, profile_memory=True): every allocation and free
  in time order, so its running sum's maximum is the step's peak above what was allocated before;
* the model's counter (mopeft.measure.trace.StepCounter) on the real tensors;
* the counter on fake tensors (what `mopeft plan` runs at 1024² without memory or a GPU).

Prints peak bytes, FLOPs and bytes moved, and the differences. Usage:
    python scripts/check_resource_model.py [tiny:96 vit_b:256 ...]
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from mopeft.measure.trace import StepCounter  # noqa: E402
from mopeft.methods.build import build_model  # noqa: E402
from mopeft.train.losses import segmentation_loss  # noqa: E402

K, BATCH = 7, 2


def _setup(arch: str, size: int):
    torch.manual_seed(0)
    model = build_model(arch, K, "lora", {}, image_size=size)
    return model, torch.randn(BATCH, 3, size, size), torch.randint(0, K, (BATCH, size, size))


def _step(model, x, y) -> None:
    segmentation_loss(model(x), y).backward()


def profiler_peak(arch: str, size: int) -> int:
    """Peak of the CPU allocator's running total during the step, above its start."""
    model, x, y = _setup(arch, size)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _step(model, x, y)
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]" and e.device_type() == torch._C._autograd.DeviceType.CPU
    )
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak


def counted(arch: str, size: int, fake: bool) -> tuple[int, int, int]:
    """(peak above start, FLOPs, bytes moved) from the model's counter."""
    with FakeTensorMode() if fake else contextlib.nullcontext():
        model, x, y = _setup(arch, size)
        counter = StepCounter()
        counter.track([*model.parameters(), *model.buffers(), x, y])
        start = counter.live
        with counter:
            _step(model, x, y)
    return counter.peak - start, counter.flops, counter.bytes


def main(cases: list[str]) -> int:
    print(f"LoRA, K={K}, batch {BATCH}, fp32, CPU kernels; peak = live bytes above the step's start")
    for case in cases:
        arch, size = case.split(":")
        allocator = profiler_peak(arch, int(size))
        real = counted(arch, int(size), fake=False)
        fake = counted(arch, int(size), fake=True)
        print(
            f"{arch}@{size}: allocator peak {allocator / 2**20:.3f} MiB | counter, real tensors "
            f"{real[0] / 2**20:.3f} MiB ({100 * (real[0] - allocator) / allocator:+.3f} %) | counter, fake "
            f"tensors {fake[0] / 2**20:.3f} MiB ({100 * (fake[0] - allocator) / allocator:+.3f} %)"
        )
        print(
            f"   FLOPs real {real[1] / 1e9:.3f} G, fake {fake[1] / 1e9:.3f} G; bytes moved real "
            f"{real[2] / 1e9:.3f} GB, fake {fake[2] / 1e9:.3f} GB "
            f"({100 * (fake[2] - real[2]) / real[2]:+.3f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["tiny:96", "vit_b:256"]))
