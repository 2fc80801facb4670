"""Memory and traffic of the full-resolution segmentation loss: the batch-wide upsampling vs per image.

Why: at K = 201, B = 4, 1024² labels the old loss kept several K × S × S fp32 tensors of the whole
batch for backward (about half of a LoRA step's peak). This script measures, for the old and the
new implementation of ``segmentation_loss(..., resolution="full")``:

(a) at the study's shape on fake tensors (no memory is allocated, so it runs anywhere): the peak
    of live tensor bytes during forward + backward and the bytes read + written summed over ops;
(b) on real CPU tensors at a small size: wall time of forward + backward (median of interleaved
    repetitions, one thread) and the same peak, measured on the real tensors.

Peak: a TorchDispatchMode counts each new storage an op returns (views and in-place results
share their input's) and forgets it when the storage dies (StorageWeakRef); the inputs (logits,
labels) are not counted, the gradient of the logits is. Traffic model: every op reads its tensor
inputs and writes its outputs once; views are free; index ops (gather, index, scatter_add_,
nll_loss) are charged only for the elements they touch; copy_ reads the source and writes self.
No asserts: the figures are printed.

    .venv/bin/python scripts/bench_loss.py [--reps 7] [--classes 104 201]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mopeft.train.losses import IGNORE_INDEX, dice_loss, loss_target, segmentation_loss

GIB = 1024**3


def old_full_loss(
    logits: torch.Tensor, labels: torch.Tensor, ce_weight: float = 0.2, dice_weight: float = 0.8
) -> torch.Tensor:
    """The "full" loss as it was before the per-image rewrite: the whole batch upsampled to K × S × S."""
    logits, labels = loss_target(logits, labels, "full")
    labelled = (labels != IGNORE_INDEX).sum().clamp_min(1)
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum") / labelled
    return ce_weight * ce + dice_weight * dice_loss(logits, labels)


def new_full_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The current implementation (mopeft.train.losses.segmentation_loss, resolution "full")."""
    return segmentation_loss(logits, labels, resolution="full")


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "old": old_full_loss,
    "new": new_full_loss,
}


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _tensors(tree) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


class MemoryTraffic(TorchDispatchMode):
    """Live tensor bytes (current, peak) and bytes read + written, per op name and in total."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[StorageWeakRef, int]] = {}
        self.current = self.peak = 0
        self.traffic: dict[str, int] = defaultdict(int)

    def _sweep(self) -> None:
        for key in [key for key, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]

    def _charge(self, func, args, kwargs, out) -> int:
        name = func._schema.name.split("::")[-1]
        outs = _tensors(out)
        if func.is_view or name in ("detach", "alias", "lift_fresh") or not outs:
            return 0  # no data moved (prim::device, sizes, views)
        kw = {a.name: v for a, v in zip(func._schema.arguments, args, strict=False)} | kwargs
        if name in ("gather", "index"):
            idx = kw["index"] if name == "gather" else kw["indices"]
            return sum(map(_nbytes, _tensors(idx))) + 2 * sum(map(_nbytes, outs))
        if name in ("scatter_add_", "scatter_add"):
            touched = _nbytes(kw["src"]) + _nbytes(kw["index"]) + 2 * _nbytes(kw["src"])
            copy = 2 * _nbytes(kw["self"]) if name == "scatter_add" else 0
            return touched + copy
        if name.startswith("nll_loss") and name.endswith("forward"):
            target = kw["target"]
            return _nbytes(target) + target.numel() * kw["self"].element_size() + sum(map(_nbytes, outs))
        if name.startswith("nll_loss") and name.endswith("backward"):
            return _nbytes(kw["grad_output"]) + _nbytes(kw["target"]) + sum(map(_nbytes, outs))
        if name == "copy_":
            return _nbytes(kw["src"]) + _nbytes(kw["self"])
        if name in ("zero_", "fill_"):
            return _nbytes(kw["self"])
        return sum(map(_nbytes, _tensors((args, kwargs)))) + sum(map(_nbytes, outs))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._sweep()
        out = func(*args, **kwargs)
        self.traffic[func._schema.name.split("::")[-1]] += self._charge(func, args, kwargs, out)
        if not func.is_view and not func._schema.is_mutable:  # a fresh storage per output
            for t in _tensors(out):
                storage = t.untyped_storage()
                ref = StorageWeakRef(storage)
                if ref.cdata not in self.live:
                    self.live[ref.cdata] = (ref, storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out

    @property
    def total_traffic(self) -> int:
        return sum(self.traffic.values())


def measure(loss_fn, logits: torch.Tensor, labels: torch.Tensor) -> MemoryTraffic:
    """Forward + backward of ``loss_fn`` under the tracker (the inputs exist before it starts)."""
    logits = logits.detach().requires_grad_()
    with MemoryTraffic() as tracker:
        loss_fn(logits, labels).backward()
        del logits
        tracker._sweep()
    return tracker


def _case(b: int, k: int, s: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(b, k, s // 4, s // 4, dtype=torch.float32).to(dtype)
    labels = torch.randint(0, min(k, 20), (b, s, s))
    labels[:, :, s - s // 8 :] = IGNORE_INDEX  # padding
    return logits, labels


def _top_ops(tracker: MemoryTraffic, n: int = 8) -> str:
    ops = sorted(tracker.traffic.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{name} {v / 1e9:.1f}" for name, v in ops)


def fake_study_shape(classes: list[int], dtype: torch.dtype) -> None:
    print(f"(a) fake tensors, B=4, logits (4,K,256,256) {str(dtype).split('.')[-1]}, labels (4,1024,1024)")
    print(f"{'K':>5} {'impl':>4} {'peak live GiB':>14} {'traffic GB':>11}   largest traffic (GB)")
    for k in classes:
        for name, fn in LOSSES.items():
            with FakeTensorMode():
                logits, labels = _case(4, k, 1024, dtype)
                tracker = measure(fn, logits, labels)
            print(
                f"{k:>5} {name:>4} {tracker.peak / GIB:>14.2f} {tracker.total_traffic / 1e9:>11.1f}   "
                f"{_top_ops(tracker)}"
            )


def real_cpu(k: int, size: int, reps: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    logits, labels = _case(1, k, size, torch.float32)
    print(
        f"(b) real CPU, 1 thread, B=1, K={k}, logits (1,{k},{size // 4},{size // 4}) fp32, "
        f"labels (1,{size},{size}); median of {reps} interleaved reps"
    )
    times: dict[str, list[float]] = {name: [] for name in LOSSES}
    for fn in LOSSES.values():  # warm-up
        fn(logits.detach().requires_grad_(), labels).backward()
    for _ in range(reps):
        for name, fn in LOSSES.items():
            x = logits.detach().requires_grad_()
            t0 = time.perf_counter()
            fn(x, labels).backward()
            times[name].append(time.perf_counter() - t0)
    ref = {}
    for name, fn in LOSSES.items():
        x = logits.detach().requires_grad_()
        loss = fn(x, labels)
        loss.backward()
        ref[name] = (loss.detach(), x.grad)
    diff = (ref["new"][1] - ref["old"][1]).abs().max() / ref["old"][1].abs().max()
    print(f"{'impl':>4} {'fwd+bwd ms':>11} {'peak live MiB':>14} {'traffic GB':>11}")
    for name, fn in LOSSES.items():
        tracker = measure(fn, logits, labels)
        print(
            f"{name:>4} {1e3 * statistics.median(times[name]):>11.1f} {tracker.peak / 2**20:>14.1f} "
            f"{tracker.total_traffic / 1e9:>11.2f}"
        )
    print(
        f"new vs old (fp32): loss {ref['new'][0].item():.7f} vs {ref['old'][0].item():.7f}, "
        f"max |grad diff| / max |grad| = {diff.item():.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[104, 201])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--size", type=int, default=256, help="label size of the real CPU run")
    args = parser.parse_args()
    fake_study_shape(args.classes, torch.bfloat16)
    fake_study_shape(args.classes, torch.float32)
    real_cpu(max(args.classes), args.size, args.reps)


if __name__ == "__main__":
    main()
