"""Image embeddings computed once, for methods whose encoder is frozen and gets no gradient.

``baseline`` and ``decoder_ft`` train only the mask decoder (or its read-out), yet a plain loop
recomputes the frozen ViT-B encoder, ~99 % of their FLOPs, at every step. The embedding of an
image is a pure function of (base weights, image, flip, image size), so it is computed the first
time an (image, flip) pair is drawn and reused by every later epoch. The encoder is not
flip-equivariant, so each flip state has its own entry.

Entries are filled one image at a time: the encoder's result for an image must not depend on which
other images happened to share its batch (GEMM blocking can change the last bits with the batch
size: 1.8e-6 measured on the tiny model), so that a resumed run, which refills the cache from
different batches, stays bit-identical. The training loop encodes frozen encoders one image at a
time with the cache off too, so both settings compute the same thing.

Memory is bounded by two budgets. On a GPU, entries stay on the device up to ``device_bytes``, then
go to pinned host memory up to ``host_bytes``; on the CPU the device *is* host memory, so every
entry counts against ``host_bytes``. An entry that fits neither budget is not stored: it is
recomputed, one image at a time as above, every time its (image, flip) pair is drawn. A full
cache therefore costs speed, never correctness: cache on, cache off and any budget in between feed
the decoder the same bits. (A ViT-B entry at 1024 px is fp32 (SAM's LayerNorm2d runs in fp32
under autocast), 4 MiB: 30 epochs of FloodNet's ~18k tiles would need ~132 GiB, far beyond the
48 GB a SLURM ``train`` job asks for.)

``dtype="bf16"`` (opt in, ``mopeft train --cache-dtype bf16``) rounds every embedding to bf16,
stored or not, and halves the bytes per entry. It CHANGES THE NUMERICS (the decoder sees rounded
embeddings, unlike the cache-off run and evaluation); ``scripts/bench_encoder_cache.py`` measures
by how much.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

MIB = 1 << 20
DEFAULT_DEVICE_MB = 8192
HOST_FRACTION = 0.5
CACHE_DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
# cgroup v1 reports "no limit" as a huge number (PAGE_COUNTER_MAX pages), not as "max".
_UNLIMITED = 1 << 60


def encoder_is_frozen(model: nn.Module) -> bool:
    """True when no parameter of the image encoder trains (nothing upstream of it can either)."""
    return not any(p.requires_grad for p in model.image_encoder.parameters())


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) < _UNLIMITED else None  # "max" or huge: no limit


def _mem_available(meminfo: Path) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_limit(proc_cgroup: Path, cgroup_root: Path) -> int | None:
    """The tightest memory limit of this process's cgroup and its ancestors (v2 ``memory.max`` or
    v1 ``memory.limit_in_bytes``). SLURM puts the job's limit on ``job_<id>`` while the process
    sits in ``job_<id>/step_<n>/...``, so the ancestors matter; inside a cgroup namespace the path
    is ``/`` and the mount root holds the limit."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # v2 unified hierarchy
            base, name = cgroup_root, "memory.max"
        elif "memory" in controllers.split(","):
            base, name = cgroup_root / "memory", "memory.limit_in_bytes"
        else:
            continue
        folder = base / rel.strip().lstrip("/")
        while True:  # the own cgroup, then each ancestor up to the mount root
            limit = _read_int(folder / name)
            if limit is not None:
                limits.append(limit)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(limits) if limits else None


def available_host_bytes(
    meminfo: str | Path = "/proc/meminfo",
    proc_cgroup: str | Path = "/proc/self/cgroup",
    cgroup_root: str | Path = "/sys/fs/cgroup",
) -> int | None:
    """Host memory this process may use: min(MemAvailable, the cgroup v2/v1 memory limit), None
    when neither can be read (not Linux). Paths are arguments so tests can fake them."""
    found = [
        v for v in (_mem_available(Path(meminfo)), _cgroup_limit(Path(proc_cgroup), Path(cgroup_root))) if v
    ]
    return min(found) if found else None


def default_host_budget(
    meminfo: str | Path = "/proc/meminfo",
    proc_cgroup: str | Path = "/proc/self/cgroup",
    cgroup_root: str | Path = "/sys/fs/cgroup",
    fraction: float = HOST_FRACTION,
) -> int:
    """Host bytes for cache entries when ``--cache-host-mb`` is not given: half of what this process
    may use (:func:`available_host_bytes`). Half, because the rest of the job needs the other half:
    the model, the optimiser, CUDA's own host allocations, DataLoader workers and their prefetched
    batches, and the page cache of the images; SLURM kills the whole job at its cgroup limit, so
    the cache, the one part that can shrink at no cost but speed, leaves a wide margin. Without
    /proc (macOS) it falls back to half the physical memory. The pipeline passes an explicit
    budget derived from the job's mem_mb instead."""
    available = available_host_bytes(meminfo, proc_cgroup, cgroup_root)
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            log.warning(
                "cannot tell how much host memory is free: the encoder cache keeps nothing on the host"
            )
            return 0
    return int(available * fraction)


def pinned_bytes(size: int) -> int:
    """What a pinned allocation of ``size`` bytes really takes: PyTorch's caching host allocator
    rounds every request up to a power of two (a 2.25 MiB entry at 768 px holds 4 MiB)."""
    return 1 << max(size - 1, 0).bit_length()


class EncoderCache:
    """Embeddings per (image index, flip), within ``device_bytes`` on a GPU + ``host_bytes`` on the host.

    Pinned host memory is page-locked, and counts against ``host_bytes`` like any other host memory:
    cudaHostAlloc'd pages are charged to the job's memory cgroup exactly as ordinary pages are (the
    OOM killer and SLURM's limit see them), and unlike ordinary pages they can never be swapped out
    or reclaimed, so there is no slack to count on. ``host_bytes=None`` is :func:`default_host_budget`.
    ``num_images`` and ``flip_states`` (2 with flip augmentation) only make the "budget reached" log
    line say how many encoder passes per epoch the budget costs.
    """

    def __init__(
        self,
        device: torch.device,
        device_bytes: int = DEFAULT_DEVICE_MB * MIB,
        host_bytes: int | None = None,
        *,
        num_images: int | None = None,
        flip_states: int = 2,
        dtype: str = "fp32",
    ) -> None:
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"cache dtype must be one of {sorted(CACHE_DTYPES)}, got {dtype!r}")
        if device_bytes < 0 or (host_bytes is not None and host_bytes < 0):
            raise ValueError(f"cache budgets must be >= 0 bytes, got {device_bytes} and {host_bytes}")
        self.device = device
        # On the CPU the "device" is host memory: one budget, the host's.
        self.device_bytes = 0 if device.type == "cpu" else device_bytes
        self.host_bytes = default_host_budget() if host_bytes is None else host_bytes
        self.pin = device.type == "cuda"
        self.num_images, self.flip_states = num_images, flip_states
        self.dtype_name, self.store_dtype = dtype, CACHE_DTYPES[dtype]
        self.entries: dict[tuple[int, bool], torch.Tensor] = {}
        self.not_stored: set[tuple[int, bool]] = set()
        self.bytes_on_device = self.bytes_on_host = 0
        self.hits = self.misses = self.recomputed = 0
        self._out_dtype: torch.dtype | None = None

    def __len__(self) -> int:
        return len(self.entries)

    def embeddings(
        self,
        indices: list[int],
        flips: list[bool],
        images: torch.Tensor,
        encode: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        """(B, C, h, w) embeddings of the batch's model-ready ``images`` (already flipped)."""
        out = []
        for row, key in enumerate(zip(indices, flips, strict=True)):
            cached = self.entries.get(key)
            if cached is None:
                self.misses += 1
                self.recomputed += key in self.not_stored
                with torch.no_grad():
                    value = encode(images[row : row + 1])[0].detach()
                self._out_dtype = value.dtype
                if self.store_dtype is not None:
                    value = value.to(self.store_dtype)  # stored or not: every draw sees the same rounding
                cached = self._store(key, value)
            else:
                self.hits += 1
            out.append(cached.to(self.device, self._out_dtype, non_blocking=True))
        return torch.stack(out)

    def _store(self, key: tuple[int, bool], value: torch.Tensor) -> torch.Tensor:
        """Keep ``value`` if a budget has room for it; either way return a tensor with its values."""
        size = value.untyped_storage().nbytes()
        if self.bytes_on_device + size <= self.device_bytes:  # device_bytes is 0 on the CPU
            self.bytes_on_device += size
        elif self.bytes_on_host + (host := pinned_bytes(size) if self.pin else size) <= self.host_bytes:
            if self.pin:
                value = torch.empty(value.shape, dtype=value.dtype, pin_memory=True).copy_(value)
            else:
                value = value.cpu()
            self.bytes_on_host += host
        else:
            if not self.not_stored:
                self._log_full(size)
            self.not_stored.add(key)
            return value
        self.entries[key] = value
        return value

    def _log_full(self, size: int) -> None:
        """Once: entries are one size in a run, so the first refusal means the stored set is final."""
        stored = len(self.entries)
        cost = "the others are recomputed each time they are drawn"
        if self.num_images is not None:
            pairs = self.num_images * self.flip_states
            # Each (image, flip) pair is drawn with probability 1/flip_states per epoch.
            per_epoch = max(pairs - stored, 0) / self.flip_states
            cost = (
                f"the other {pairs - stored} of {pairs} (image, flip) pairs are recomputed when drawn, "
                f"~{per_epoch:.0f} encoder passes per epoch of {self.num_images} images"
            )
        log.warning(
            "encoder cache budget reached: %d embeddings of %.2f MiB stored (%.0f MiB on the device, "
            "%.0f MiB on the host; budgets %.0f + %.0f MiB); %s. Same results, slower: "
            "--cache-host-mb / --cache-device-mb set the budgets",
            stored,
            size / MIB,
            self.bytes_on_device / MIB,
            self.bytes_on_host / MIB,
            self.device_bytes / MIB,
            self.host_bytes / MIB,
            cost,
        )

    def summary(self) -> dict:
        """Counts for train_log.json: ``misses`` are encoder passes, ``recomputed`` those of them spent
        on pairs the budget had refused before, ``not_stored`` the pairs refused."""
        return {
            "entries": len(self.entries),
            "hits": self.hits,
            "misses": self.misses,
            "recomputed": self.recomputed,
            "not_stored": len(self.not_stored),
            "device_bytes": self.bytes_on_device,
            "host_bytes": self.bytes_on_host,
            "device_budget_bytes": self.device_bytes,
            "host_budget_bytes": self.host_bytes,
            "dtype": self.dtype_name,
        }
