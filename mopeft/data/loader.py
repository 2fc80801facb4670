"""Torch dataset over (image, label) pairs of the prepared layout, in SAM's input convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mopeft.data.common import load_image
from mopeft.model.preprocess import preprocess_image, preprocess_label


class SegmentationPairs(Dataset):
    """Items: image (3,S,S) normalised + padded, label (S,S) long padded with 255, sizes, stem.

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
        label = load_image(lbl_path)
        if label.ndim != 2:
            raise ValueError(f"{lbl_path}: label must be single-channel, got shape {label.shape}")
        if image.shape[:2] != label.shape:
            raise ValueError(
                f"{lbl_path}: size {label.shape} differs from image {img_path.name} {image.shape[:2]}"
            )
        return image, label

    def __getitem__(self, index: int) -> dict:
        image, label = self.load_raw(index)
        x, input_size = preprocess_image(image, self.image_size)
        return {
            "image": x,
            "label": preprocess_label(label, self.image_size),
            "input_size": torch.tensor(input_size),
            "original_size": torch.tensor(label.shape),
            "index": index,
        }
