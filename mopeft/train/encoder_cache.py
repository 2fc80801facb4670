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
They stay on the training device up to ``device_bytes`` and spill to (pinned) host memory beyond.
Cached values are exactly what the encoder returned under the run's autocast, so the decoder sees
the same inputs as without the cache.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def encoder_is_frozen(model: nn.Module) -> bool:
    """True when no parameter of the image encoder trains (nothing upstream of it can either)."""
    return not any(p.requires_grad for p in model.image_encoder.parameters())


class EncoderCache:
    def __init__(self, device: torch.device, device_bytes: int = 8 << 30) -> None:
        self.device = device
        self.device_bytes = device_bytes
        self.entries: dict[tuple[int, bool], torch.Tensor] = {}
        self.bytes_on_device = 0
        self.hits = self.misses = 0

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
                with torch.no_grad():
                    cached = encode(images[row : row + 1])[0].detach()
                cached = self._store(key, cached)
            else:
                self.hits += 1
            out.append(cached.to(self.device, non_blocking=True))
        return torch.stack(out)

    def _store(self, key: tuple[int, bool], value: torch.Tensor) -> torch.Tensor:
        size = value.numel() * value.element_size()
        if self.device.type == "cpu" or self.bytes_on_device + size <= self.device_bytes:
            self.bytes_on_device += size
        else:
            value = value.cpu().pin_memory() if torch.cuda.is_available() else value.cpu()
        self.entries[key] = value
        return value

    def summary(self) -> dict:
        return {"entries": len(self.entries), "hits": self.hits, "misses": self.misses}
