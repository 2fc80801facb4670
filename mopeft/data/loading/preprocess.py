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


def resize_image(image: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 HxWx3 -> uint8 (3, h, w) with the longest side ``image_size`` (SAM's ResizeLongestSide).

    Resized only when the size differs (prepared tiles are usually already 1024²), and in uint8:
    PyTorch's antialiased bilinear has a uint8 kernel several times faster than the float path, and
    SAM resizes 8-bit images anyway, so the result stays on the 8-bit grid.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxWx3 image, got dtype {image.dtype} shape {image.shape}")
    h, w = resized_shape(image.shape[0], image.shape[1], image_size)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    if (h, w) == tuple(image.shape[:2]):
        return x.contiguous()
    return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


def resize_label(label: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 HxW class ids -> uint8 (h, w): nearest resize like the image (255 stays 255)."""
    if label.ndim != 2:
        raise ValueError(f"expected a single-channel HxW label, got shape {label.shape}")
    h, w = resized_shape(label.shape[0], label.shape[1], image_size)
    y = torch.from_numpy(np.ascontiguousarray(label))
    if (h, w) == tuple(label.shape):
        return y.to(torch.uint8)
    return F.interpolate(y[None, None].float(), size=(h, w), mode="nearest-exact")[0, 0].to(torch.uint8)


def pad_to_square(x: torch.Tensor, image_size: int, value: int) -> torch.Tensor:
    """Pad (..., h, w) bottom/right to (..., S, S), as SAM pads its input."""
    return F.pad(x, (0, image_size - x.shape[-1], 0, image_size - x.shape[-2]), value=value)


def content_mask(sizes: torch.Tensor, image_size: int) -> torch.Tensor:
    """(B, S, S) bool: True inside each image's resized (h, w) region (top-left)."""
    ar = torch.arange(image_size, device=sizes.device)
    return (ar[None, :, None] < sizes[:, 0, None, None]) & (ar[None, None, :] < sizes[:, 1, None, None])


def flip_content(x: torch.Tensor, sizes: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror the content region (first w columns) of the flagged samples; the padding stays right.

    Flipping the whole padded square would move a non-square image's padding to the left, a layout
    evaluation never shows. x: (B, ..., S, S); sizes (B, 2) resized (h, w); flip (B,) bool.
    """
    s = x.shape[-1]
    col = torch.arange(s, device=x.device).expand(x.shape[0], s)
    width = sizes[:, 1:2]
    mirrored = torch.where(flip[:, None] & (col < width), width - 1 - col, col)  # (B, S) source column
    index = mirrored.view(x.shape[0], *([1] * (x.dim() - 2)), s).expand_as(x)
    return torch.gather(x, -1, index)


def to_model_input(
    images: torch.Tensor,
    sizes: torch.Tensor,
    flip: torch.Tensor | None = None,
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
    pixel_std: tuple[float, float, float] = PIXEL_STD,
) -> torch.Tensor:
    """uint8 (B, 3, S, S) padded batch -> normalised float with zero padding, on the batch's device.

    Runs where the model runs: the host only decodes and resizes uint8 pixels (4x less to copy).
    ``flip`` (B,) bool on the batch's device, or None (no sample flipped; decided by the caller on
    the host, so that this function never waits for the device).
    """
    if flip is not None:
        images = flip_content(images, sizes, flip)
    mean = torch.tensor(pixel_mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std, device=images.device).view(1, 3, 1, 1)
    x = (images.float() - mean) / std
    return x * content_mask(sizes, images.shape[-1])[:, None]


def preprocess_image(
    image: np.ndarray,
    image_size: int,
    pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
    pixel_std: tuple[float, float, float] = PIXEL_STD,
) -> tuple[torch.Tensor, tuple[int, int]]:
    """uint8 HxWx3 -> float (3,S,S) normalised and zero-padded; also returns the resized (h, w).

    The single-image form of :func:`resize_image` + :func:`to_model_input` (same numbers).
    """
    x = resize_image(image, image_size)
    hw = (int(x.shape[1]), int(x.shape[2]))
    padded = pad_to_square(x, image_size, 0)[None]
    return to_model_input(padded, torch.tensor([hw]), None, pixel_mean, pixel_std)[0], hw


def preprocess_label(label: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8/int HxW class ids -> long (S,S): nearest resize like the image, padding = ignore (255)."""
    return pad_to_square(resize_label(label, image_size), image_size, IGNORE_INDEX).long()


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
