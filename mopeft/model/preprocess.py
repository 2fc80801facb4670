"""SAM's input convention (resize longest side, normalise, pad bottom/right) and its inverse.

Why pad instead of stretch: SAM was pre-trained on aspect-preserving resizes padded to a square,
and the postprocess step must crop the same padding away before mapping logits back to each
label's original size, otherwise predictions are spatially shifted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = 255
PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """SAM ``ResizeLongestSide.get_preprocess_shape``: longest side -> ``long_side``, rounded half up."""
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess_image(
    image: np.ndarray,
    image_size: int,
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
    pixel_std: tuple[float, float, float] = PIXEL_STD,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 HxWx3 -> float (3,S,S) normalised and zero-padded; also returns the resized (h, w)."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 image, got dtype {image.dtype} shape {image.shape}")
    h, w = resized_shape(image.shape[0], image.shape[1], image_size)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None]
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
    x = x.clamp(0, 255).round()  # SAM resizes 8-bit images (PIL), so stay on the 8-bit grid
    x = (x - torch.tensor(pixel_mean).view(3, 1, 1)) / torch.tensor(pixel_std).view(3, 1, 1)
    return F.pad(x, (0, image_size - w, 0, image_size - h)), (h, w)


def preprocess_label(label: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8/int HxW class ids -> long (S,S): nearest resize like the image, padding = ignore (255)."""
    if label.ndim != 2:
        raise ValueError(f"expected a single-channel HxW label, got shape {label.shape}")
    h, w = resized_shape(label.shape[0], label.shape[1], image_size)
    y = torch.from_numpy(np.ascontiguousarray(label)).long()[None, None].float()
    y = F.interpolate(y, size=(h, w), mode="nearest-exact")[0, 0].long()
    return F.pad(y, (0, image_size - w, 0, image_size - h), value=IGNORE_INDEX)


def postprocess(
    logits: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
) -> torch.Tensor:
    """Logits (B,K,s,s) at any scale of the padded square -> (B,K,H0,W0) for the original image.

    Upsample to the padded input size, crop the padding (``input_size`` = resized h, w), then resize
    to the original size, exactly as SAM's ``postprocess_masks``.
    """
    if logits.ndim != 4:
        raise ValueError(f"expected logits (B,K,h,w), got shape {tuple(logits.shape)}")
    # The logits cover the padded S x S square, and the resized image's long side is exactly S.
    size = max(input_size)
    x = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    return F.interpolate(x, size=tuple(original_size), mode="bilinear", align_corners=False)
