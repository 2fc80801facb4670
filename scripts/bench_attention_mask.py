"""Cost of SDPA's additive mask (mopeft.peft.attention.attention_mask): in-place build vs autograd Function.

Why: the mask used to be built by copy_/add_ into views of one padded allocation while rel_h / rel_w
(and MoPEFT-logit's prefix bias) require grad, and autograd's backward of such writes (CopySlices)
clones and re-copies the whole (B, heads, N, N) gradient several times. This script prints

 (a) bytes read + written per aten op, forward and backward, of one global block's mask at ViT-B
     1024² (B=4, 12 heads, 64x64 tokens, bf16), counted on fake tensors (nothing is allocated). Per
     op: every tensor argument it reads plus every tensor it writes; views and bare allocations
     (empty) count 0; write-only arguments (copy_/zero_/fill_ destination, out=) are not counted as
     read; a broadcast (stride-0) dimension counts once. An estimate of memory traffic, not a timing;
 (b) CPU wall time with one thread of the same two constructions on a 12 x 2304² fp32 mask (one
     image, 48x48 global grid), forward and backward, median of round-robin interleaved repetitions.

Run: .venv/bin/python scripts/bench_attention_mask.py [--reps 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from mopeft.peft.attention import MASK_ALIGNMENT, attention_mask

WRITE_ONLY = {"copy_", "zero_", "fill_"}  # in-place ops that overwrite their first argument unread
ALLOCATIONS = {"empty", "empty_strided", "new_empty", "new_empty_strided"}


def inplace_mask(
    q: torch.Tensor,
    rel: tuple[torch.Tensor, torch.Tensor] | None,
    hw: tuple[int, int],
    prefix_bias: torch.Tensor | None,
    length: int,
    query_prefix: int = 0,
) -> torch.Tensor:
    """The replaced construction, verbatim (also the reference of tests/test_attention_mask.py)."""
    b, nh, rows, _ = q.shape
    n = rows - query_prefix
    keys = length + n
    width = -(-keys // MASK_ALIGNMENT) * MASK_ALIGNMENT
    storage = q.new_empty(b, nh, rows, width)
    storage[..., keys:].zero_()
    full = storage[..., :keys]
    if query_prefix:
        full[:, :, :query_prefix].zero_()
    mask = full[:, :, query_prefix:]
    if length:
        if prefix_bias is None:
            mask[..., :length].zero_()
        else:
            mask[..., :length].copy_(prefix_bias.to(q.dtype).view(b, 1, 1, 1).expand(b, nh, n, length))
    body = mask[..., length:]
    if rel is None:
        body.zero_()
    else:
        h, w = hw
        rel_h, rel_w = rel
        grid = body.unflatten(-1, (h, w))
        grid.copy_(rel_h.unsqueeze(-1).expand_as(grid))
        grid.add_(rel_w.unsqueeze(-2))
    return full


BUILDERS: dict[str, Callable[..., torch.Tensor]] = {
    "old (in-place)": inplace_mask,
    "new (Function)": attention_mask,
}


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements t addresses: a broadcast (stride-0) dimension counts once."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        n *= size if stride else 1
    return n * t.element_size()


class ByteCounter(TorchDispatchMode):
    """Sums, per aten op, the bytes of the tensors it reads and writes (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.per_op: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # name -> [calls, bytes]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        written = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if func.is_view or name in ALLOCATIONS or not written:  # no tensor out: a metadata query (device)
            moved = 0
        else:
            schema = func._schema.arguments
            mutated = [i for i, a in enumerate(schema) if a.alias_info and a.alias_info.is_write]
            reads = [a for i, a in enumerate(args) if not (i in mutated and name in WRITE_ONLY)]
            reads += [v for k, v in kwargs.items() if k != "out"]
            read = [t for t in tree_flatten(reads)[0] if isinstance(t, torch.Tensor)]
            moved = sum(tensor_bytes(t) for t in read + written)
        entry = self.per_op[name]
        entry[0] += 1
        entry[1] += moved
        return out

    @property
    def total(self) -> int:
        return sum(b for _, b in self.per_op.values())


def _inputs(b, nh, hw, d, length, dtype, device="cpu", grad=True):
    n = hw[0] * hw[1]
    q = torch.randn(b, nh, n, d, dtype=dtype, device=device)
    rel = tuple(torch.randn(b, nh, n, s, dtype=dtype, device=device).requires_grad_(grad) for s in hw)
    bias = torch.randn(b, dtype=dtype, device=device).requires_grad_(grad) if length else None
    return q, rel, bias


def count_bytes(length: int) -> dict[str, tuple[ByteCounter, ByteCounter]]:
    """Forward and backward byte counts of each construction at ViT-B 1024², B=4, bf16 (fake tensors)."""
    result = {}
    for label, build in BUILDERS.items():
        with FakeTensorMode():
            q, rel, bias = _inputs(4, 12, (64, 64), 64, length, torch.bfloat16)
            leaves = [*rel, *([bias] if bias is not None else [])]
            with ByteCounter() as fwd:
                mask = build(q, rel, (64, 64), bias, length)
            upstream = torch.empty(mask.shape, dtype=mask.dtype)  # SDPA's gradient of its attn_mask
            with ByteCounter() as bwd:
                torch.autograd.grad(mask, leaves, upstream)
        result[label] = (fwd, bwd)
    return result


def reference_bytes() -> tuple[int, int]:
    """The same counts for a plain broadcast add rel_h[..., :, None] + rel_w[..., None, :] (no padding)."""
    with FakeTensorMode():
        _, (rel_h, rel_w), _ = _inputs(4, 12, (64, 64), 64, 0, torch.bfloat16)
        with ByteCounter() as fwd:
            mask = (rel_h[..., :, None] + rel_w[..., None, :]).flatten(-2)
        with ByteCounter() as bwd:
            torch.autograd.grad(mask, (rel_h, rel_w), torch.empty(mask.shape, dtype=mask.dtype))
    return fwd.total, bwd.total


def time_cpu(reps: int, length: int) -> dict[str, tuple[float, float]]:
    """Median forward / backward seconds, one thread, 12 x 2304² fp32, constructions interleaved."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    q, rel, bias = _inputs(1, 12, (48, 48), 64, length, torch.float32)
    leaves = [*rel, *([bias] if bias is not None else [])]
    upstream = torch.randn(1, 12, 2304, length + 2304)
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in BUILDERS}
    for rep in range(reps + 1):  # the first round warms up and is dropped
        for label, build in BUILDERS.items():
            t0 = time.perf_counter()
            mask = build(q, rel, (48, 48), bias, length)
            t1 = time.perf_counter()
            torch.autograd.grad(mask, leaves, upstream)
            t2 = time.perf_counter()
            if rep:
                times[label].append((t1 - t0, t2 - t1))
            del mask
    return {
        label: (statistics.median(f for f, _ in ts), statistics.median(b for _, b in ts))
        for label, ts in times.items()
    }


def _gb(n: int) -> str:
    return f"{n / 1e9:6.2f} GB"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed round-robin repetitions (>= 5)")
    parser.add_argument("--per-op", action="store_true", help="print the byte count of every aten op")
    args = parser.parse_args(argv)
    cases = {"no prefix (LoRA, full FT, ...)": 0, "20 prefix columns + bias (MoPEFT-logit)": 20}

    print("(a) bytes read + written, one global block's mask, ViT-B 1024², B=4, 12 heads, 64x64 tokens, bf16")
    plain_f, plain_b = reference_bytes()
    print(f"    plain broadcast add (reference): forward {_gb(plain_f)}, backward {_gb(plain_b)}")
    for case, length in cases.items():
        counts = count_bytes(length)
        print(f"  {case}")
        for label, (fwd, bwd) in counts.items():
            print(f"    {label:16s} forward {_gb(fwd.total)}, backward {_gb(bwd.total)}")
            if args.per_op:
                for phase, counter in (("fwd", fwd), ("bwd", bwd)):
                    for name, (calls, moved) in counter.per_op.items():
                        if moved:
                            print(f"        {phase} {name:24s} x{calls:<3d} {_gb(moved)}")
        (old_f, old_b), (new_f, new_b) = ((f.total, b.total) for f, b in counts.values())
        print(f"    old / new: forward {old_f / new_f:.2f}x, backward {old_b / new_b:.2f}x")

    print(f"(b) CPU, 1 thread, 12 x 2304² fp32 mask (48x48 grid), median of {args.reps} interleaved reps;")
    print("    forward includes the first touch of a fresh 255 MB allocation (page faults), in both builds")
    for case, length in cases.items():
        timed = time_cpu(args.reps, length)
        print(f"  {case}")
        for label, (f, b) in timed.items():
            print(f"    {label:16s} forward {f * 1e3:8.1f} ms, backward {b * 1e3:8.1f} ms")
        (old_f, old_b), (new_f, new_b) = timed.values()
        print(f"    old / new: forward {old_f / new_f:.2f}x, backward {old_b / new_b:.2f}x")


if __name__ == "__main__":
    main()
