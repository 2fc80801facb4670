"""Feeding (image, label) pairs of the prepared layout to a GPU without making it wait.

The host only decodes and, when the size differs, resizes uint8 pixels; normalisation, padding to
SAM's square and the flip run on the device (:func:`mopeft.data.loading.preprocess.to_model_input`). Items
are uint8, a quarter of the float bytes to pin and copy. Batches come from a ``DataLoader`` with
worker processes, pinned memory and persistent workers, driven by :class:`StepBatchSampler`, which
yields exactly ``batch_indices(step)`` for the remaining steps: a run resumed at step t sees the
same batches as one that never stopped, whatever the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mopeft.data.images import load_image, load_label
from mopeft.data.loading.preprocess import IGNORE_INDEX, pad_to_square, resize_image, resize_label
from mopeft.errors import InputError


class SegmentationPairs(Dataset):
    """Items: uint8 image (3, h, w) with the longest side S, uint8 label (h, w), sizes, index.

    Decoding happens per item so memory stays flat for datasets of thousands of 1024² tiles.
    """

    def __init__(self, pairs: list[tuple[Path, Path]], image_size: int) -> None:
        if not pairs:
            raise ValueError("no (image, label) pairs: the split is empty")
        self.pairs = pairs
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.pairs)

    def load_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        img_path, lbl_path = self.pairs[index]
        image = load_image(img_path, mode="RGB")
        label = load_label(lbl_path)  # refuses non-PNG content (a renamed JPEG)
        if label.ndim != 2:
            raise InputError(f"{lbl_path}: label must be single-channel, got shape {label.shape}")
        if image.shape[:2] != label.shape:
            raise InputError(
                f"{lbl_path}: size {label.shape} differs from image {img_path.name} {image.shape[:2]}"
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        image, label = self.load_raw(index)
        item = image_item(image, self.image_size, index)
        item.update(label=resize_label(label, self.image_size), raw_label=label)
        return item


class ImageFiles(Dataset):
    """Items of :class:`SegmentationPairs` without a label: what ``mopeft predict`` feeds the model
    (same decoding and resize, so a prepared test image gives the same logits as in evaluation)."""

    def __init__(self, images: list[Path], image_size: int) -> None:
        if not images:
            raise ValueError("no images to predict")
        self.images = images
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return image_item(load_image(self.images[index], mode="RGB"), self.image_size, index)


def image_item(image: np.ndarray, image_size: int, index: int) -> dict:
    """The image part of an item (both datasets above): uint8 (3, h, w) with the longest side
    ``image_size``, its resized and original sizes, and the index."""
    x = resize_image(image, image_size)
    return {
        "image": x,
        "input_size": (int(x.shape[1]), int(x.shape[2])),
        "original_size": tuple(image.shape[:2]),
        "index": index,
    }


def batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of step ``step``'s batch: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = math.ceil(num_items / batch_size)
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_items, generator=gen)
    return perm[pos * batch_size : (pos + 1) * batch_size].tolist()


class StepBatchSampler(Sampler[list[int]]):
    """The batches of steps ``start .. steps-1``, each a pure function of (seed, step)."""

    def __init__(self, num_items: int, batch_size: int, seed: int, start: int, steps: int) -> None:
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.steps = start, steps

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.steps):
            yield batch_indices(self.num_items, self.batch_size, step, self.seed)

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def collate(items: list[dict], image_size: int, keep_raw_labels: bool = False) -> dict:
    """uint8 images (B, 3, S, S) and labels (B, S, S) padded bottom/right (labels with 255); items
    without labels (:class:`ImageFiles`) give a batch without ``labels``."""
    images = torch.stack([pad_to_square(it["image"], image_size, 0) for it in items])
    batch = {
        "images": images,
        "sizes": torch.tensor([it["input_size"] for it in items]),
        "indices": torch.tensor([it["index"] for it in items]),
        "original_sizes": [it["original_size"] for it in items],
    }
    if "label" in items[0]:
        batch["labels"] = torch.stack([pad_to_square(it["label"], image_size, IGNORE_INDEX) for it in items])
    if keep_raw_labels:
        batch["raw_labels"] = [it["raw_label"] for it in items]
    return batch


class _Collate:
    """Picklable collate function for worker processes."""

    def __init__(self, image_size: int, keep_raw_labels: bool) -> None:
        self.image_size, self.keep_raw_labels = image_size, keep_raw_labels

    def __call__(self, items: list[dict]) -> dict:
        return collate(items, self.image_size, self.keep_raw_labels)


def _one_thread(_: int) -> None:
    # Each worker decodes one item at a time; intra-op threads would only fight the main process.
    torch.set_num_threads(1)


def make_loader(
    dataset: SegmentationPairs | ImageFiles,
    batch_sampler: Sampler[list[int]] | None = None,
    batch_size: int = 1,
    workers: int = 0,
    pin_memory: bool = False,
    keep_raw_labels: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset``: fixed batches from ``batch_sampler``, or sequential ones."""
    kwargs: dict = {}
    if workers > 0:
        kwargs = {"persistent_workers": True, "prefetch_factor": 4, "worker_init_fn": _one_thread}
    if batch_sampler is None:
        kwargs |= {"batch_size": batch_size, "shuffle": False}
    else:
        kwargs["batch_sampler"] = batch_sampler
    return DataLoader(
        dataset,
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_Collate(dataset.image_size, keep_raw_labels),
        **kwargs,
    )
