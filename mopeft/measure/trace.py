"""What one step costs, operator by operator: FLOPs, bytes moved and live tensor memory.

Why a dispatch mode: below autograd every kernel a step launches (forward, the backward autograd
builds, the optimizer's) passes through ``__torch_dispatch__`` with its real input and output
tensors, so the same counter works on real CPU tensors (where it can be checked against what the
allocator holds) and on fake tensors at the study's full size (where nothing is computed).

Per operator it records:

* FLOPs from torch's own formula registry (``torch.utils.flop_counter``, the one ``FlopCounterMode``
  uses) plus this project's attention formulas (:func:`mopeft.measure.mfu.attention_flop_mapping`);
* bytes read + written: the elements of every tensor argument and every output, at their dtype.
  A view moves nothing and counts 0. This is a LOWER bound of HBM traffic (a kernel that re-reads
  its input, e.g. a GEMM that does not fit the cache, moves more; a fused kernel moves less);
* live memory: a storage is live from the op that creates it until its last reference dies
  (autograd's saved tensors, gradients and optimizer state keep theirs alive); the peak is taken
  right after each op's outputs are allocated, before its inputs can be freed. Each storage is
  rounded up to the CUDA caching allocator's 512-byte blocks when ``round_to`` says so.

Not seen: kernel workspaces (cuBLAS, the attention kernels' scratch), the CUDA context and the
caching allocator's fragmentation; :mod:`mopeft.measure.step_model` adds stated margins for them.
"""

from __future__ import annotations

import weakref
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry, shape_wrapper

from mopeft.measure.mfu import attention_flop_mapping

CUDA_BLOCK = 512  # bytes: the caching allocator's rounding of every allocation


@dataclass
class OpRecord:
    """One kernel: its name, FLOPs, bytes read + written (a lower bound of its memory traffic) and
    the phase of the step it ran in (:meth:`StepCounter.mark`)."""

    name: str
    flops: int
    bytes: int
    phase: str = ""


@dataclass
class Phase:
    """Live-memory figures of a named part of the step (:meth:`StepCounter.phase`)."""

    start_live: int = 0
    peak: int = 0
    end_live: int = 0


@dataclass
class StepCounter(TorchDispatchMode):
    """Counts every dispatched op (see module doc). ``StepCounter(round_to=512)`` models the CUDA
    allocator; ``round_to=1`` counts exact bytes (CPU checks)."""

    round_to: int = 1
    ops: list[OpRecord] = field(default_factory=list)
    live: int = 0
    peak: int = 0
    phases: dict[str, Phase] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()
        self._storages: dict[int, tuple[weakref.ref, int]] = {}  # id(storage) -> (weak ref, bytes)
        custom = {
            k: v if getattr(v, "_get_raw", False) else shape_wrapper(v)
            for k, v in attention_flop_mapping().items()
        }
        self._formulas = {**flop_registry, **custom}  # FlopCounterMode's table, the same formulas
        self.phase_name = ""
        self._phase: Phase | None = None

    # ------------------------------------------------------------------ live storages
    def _size(self, nbytes: int) -> int:
        r = self.round_to
        return -(-nbytes // r) * r if r > 1 else nbytes

    def track(self, tensors: Any) -> None:
        """Count ``tensors`` (e.g. parameters created before the counter) as live from now on."""
        for t in tree_flatten(tensors)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t)
        self._update_peak()

    def _add(self, t: torch.Tensor) -> None:
        try:
            storage = t.untyped_storage()
        except (NotImplementedError, RuntimeError):  # sparse or storage-less tensors
            return
        key = id(storage)
        if key in self._storages:
            return
        size = self._size(storage.nbytes())
        # A storage's Python object lives exactly as long as the storage (torch preserves it), so
        # its weak reference's callback is the moment the memory is freed: autograd releasing a
        # saved tensor, a gradient set to None, a temporary going out of scope.
        self._storages[key] = (weakref.ref(storage, lambda _ref, key=key: self._free(key)), size)
        self.live += size

    def _free(self, key: int) -> None:
        entry = self._storages.pop(key, None)
        if entry is not None:
            self.live -= entry[1]

    def _update_peak(self) -> None:
        self.peak = max(self.peak, self.live)
        if self._phase is not None:
            self._phase.peak = max(self._phase.peak, self.live)

    def mark(self, name: str) -> None:
        """Start phase ``name`` here (the previous one ends): its ops, start/end live and peak are
        recorded apart. Called between ops, or from an autograd hook inside backward."""
        if self._phase is not None:
            self._phase.end_live = self.live
        self.phase_name = name
        self._phase = self.phases[name] = Phase(start_live=self.live, peak=self.live)

    # ------------------------------------------------------------------ dispatch
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        name = func._schema.name
        # In-place ops that return nothing (the fused optimizer) still read and write their tensors.
        mutates = not outputs and func._schema.is_mutable
        moves = (outputs or mutates) and not func.is_view and name not in _NO_TRAFFIC and "empty" not in name
        written = [a for a in inputs if mutates and _is_mutated(func, a, args)] if mutates else outputs
        moved = sum(_nbytes(t) for t in (*inputs, *written)) if moves else 0
        self.ops.append(OpRecord(name, self._flops(func, args, kwargs, out), moved, self.phase_name))
        for t in outputs:
            self._add(t)
        self._update_peak()
        return out

    def _flops(self, func, args, kwargs, out) -> int:
        formula = self._formulas.get(func._overloadpacket)
        return 0 if formula is None else int(formula(*args, **kwargs, out_val=out))

    # ------------------------------------------------------------------ summaries
    @property
    def flops(self) -> int:
        return sum(op.flops for op in self.ops)

    @property
    def bytes(self) -> int:
        return sum(op.bytes for op in self.ops)

    def by_op(self) -> dict[str, tuple[int, int, int]]:
        """{op name: (calls, FLOPs, bytes)}, most bytes first."""
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for op in self.ops:
            a = acc[op.name]
            a[0] += 1
            a[1] += op.flops
            a[2] += op.bytes
        return dict(sorted(((k, tuple(v)) for k, v in acc.items()), key=lambda kv: -kv[1][2]))


# Ops that alias their input without being marked as views in their schema (no data moves).
_NO_TRAFFIC = frozenset({"aten::detach", "aten::lift_fresh", "aten::alias", "aten::_unsafe_view"})


def _is_mutated(func, tensor: torch.Tensor, args: tuple) -> bool:
    """Is ``tensor`` one of the arguments ``func`` writes (its schema's mutable arguments)?"""
    for arg, value in zip(func._schema.arguments, args, strict=False):
        if arg.alias_info is not None and arg.alias_info.is_write:
            values = value if isinstance(value, list | tuple) else [value]
            if any(v is tensor for v in values):
                return True
    return False


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
