"""How many images per second the training input pipeline delivers, and how many workers a GPU needs.

A GPU step of ViT-B at 1024² takes a fraction of a second; if the host cannot decode the next batch
in that time, the GPU waits. This measures the real loader (:func:`mopeft.data.loading.loader.make_loader`:
decode, resize when needed, collate uint8) on generated 1024² pairs, JPEG and PNG, for several
worker counts, and derives the per-worker rate that sizes ``--workers`` for a target throughput.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mopeft.data.images import save_image, save_label
from mopeft.data.loading.loader import SegmentationPairs, StepBatchSampler, make_loader


def write_pairs(
    root: Path, count: int, size: int, image_format: str, seed: int = 0
) -> list[tuple[Path, Path]]:
    """``count`` textured RGB images (JPEG or PNG) with blocky uint8 labels, ``size``² each."""
    rng = np.random.default_rng(seed)
    pairs = []
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(count):
        label = np.kron(rng.integers(0, 5, size=(size // 64, size // 64)), np.ones((64, 64), dtype=np.int64))
        # Smooth gradients + texture + noise: compresses like a photo, not like flat colour.
        base = np.stack([(xx * (k + 1) + yy * (3 - k)) % 256 for k in range(3)], axis=-1)
        image = (base * 0.5 + label[..., None] * 20 + rng.normal(0, 12, size=(size, size, 3))).clip(0, 255)
        ext = ".jpg" if image_format == "jpeg" else ".png"
        img_path, lbl_path = root / "images" / f"{i:04d}{ext}", root / "labels" / f"{i:04d}.png"
        save_image(img_path, image.astype(np.uint8))
        save_label(lbl_path, label.astype(np.uint8), 5)
        pairs.append((img_path, lbl_path))
    return pairs


def sustained_rate(
    pairs: list[tuple[Path, Path]], size: int, workers: int, batch_size: int, steps: int
) -> float:
    """Images/s over ``steps`` batches, after the first batch (worker start-up excluded)."""
    data = SegmentationPairs(pairs, size)
    loader = make_loader(data, StepBatchSampler(len(data), batch_size, 0, 0, steps + 1), workers=workers)
    batches = iter(loader)
    next(batches)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(batches)
    return steps * batch_size / (time.perf_counter() - t0)


def run(
    size: int = 1024,
    count: int = 24,
    workers: tuple[int, ...] = (0, 2, 4),
    batch_size: int = 4,
    steps: int = 12,
    target: float = 40.0,
) -> dict[str, Any]:
    """Rates per format and worker count, plus the workers needed for ``target`` img/s."""
    results: dict[str, Any] = {
        "image_size": size,
        "batch_size": batch_size,
        "target_img_s": target,
        "formats": {},
    }
    with tempfile.TemporaryDirectory(prefix="mopeft-loader-") as tmp:
        for fmt in ("jpeg", "png"):
            pairs = write_pairs(Path(tmp) / fmt, count, size, fmt)
            rates = {w: sustained_rate(pairs, size, w, batch_size, steps) for w in workers}
            per_worker = rates[0]  # one process decoding serially is what each worker does
            results["formats"][fmt] = {
                "img_s": {str(w): r for w, r in rates.items()},
                "per_worker_img_s": per_worker,
                "workers_for_target": math.ceil(target / per_worker),
            }
    return results


def format_table(result: dict[str, Any]) -> str:
    workers = list(next(iter(result["formats"].values()))["img_s"])
    lines = [
        f"{'format':6s} " + " ".join(f"{w + ' workers':>11s}" for w in workers) + "  workers for "
        f"{result['target_img_s']:.0f} img/s"
    ]
    for fmt, r in result["formats"].items():
        cells = " ".join(f"{r['img_s'][w]:11.1f}" for w in workers)
        lines.append(f"{fmt:6s} {cells}  {r['workers_for_target']:>5d}")
    lines.append(
        f"sustained img/s at {result['image_size']}², batch {result['batch_size']}; a worker decodes at "
        "the 0-worker rate, so the target needs that many worker processes (one CPU core each)"
    )
    return "\n".join(lines)
