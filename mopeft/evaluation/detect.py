"""Run a trained semantic model over FAIR-1M test tiles and turn its masks into oriented boxes.

Pipeline per tile (thesis Fig. A.2): SAM preprocessing -> model -> logits mapped back to the tile's
size -> softmax -> Masks2Boxes per class 1..K-1. If the model exposes its class tokens
(``forward_with_tokens``) and carries a trained ``presence_head`` (:class:`ClassPresenceMLP`), each
box score is multiplied by the class-presence probability ("mask×presence"); otherwise boxes are
scored by mask probability alone ("mask-only"), and the output says which.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mopeft.data.images import load_image
from mopeft.data.loading.preprocess import PIXEL_MEAN, PIXEL_STD, postprocess, preprocess_image
from mopeft.detection.masks2boxes import masks_to_boxes
from mopeft.environment import record_environment
from mopeft.errors import InputError, MissingInput
from mopeft.io import read_json, write_json

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _pixel_stats(model: torch.nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor):
        return tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())
    return PIXEL_MEAN, PIXEL_STD


def scoring_mode(model: torch.nn.Module) -> str:
    """Presence scoring needs both the class tokens and a trained head; anything less is mask-only."""
    has_tokens = callable(getattr(model, "forward_with_tokens", None))
    has_head = getattr(model, "presence_head", None) is not None
    return "mask×presence" if has_tokens and has_head else "mask-only"


@torch.no_grad()
def predict_probs(
    model: torch.nn.Module, image: np.ndarray, device: torch.device
) -> tuple[np.ndarray, np.ndarray | None]:
    """(K,H,W) class probabilities at the image's own size, and (K,) presence probabilities or None."""
    mean, std = _pixel_stats(model)
    x, input_size = preprocess_image(image, int(model.image_size), mean, std)
    x = x[None].to(device)
    presence = None
    if scoring_mode(model) == "mask×presence":
        logits, tokens = model.forward_with_tokens(x)
        presence = torch.sigmoid(model.presence_head(tokens.float()))[0].cpu().numpy()
    else:
        logits = model(x)
    full = postprocess(logits.float(), input_size, image.shape[:2])
    return torch.softmax(full, dim=1)[0].cpu().numpy(), presence


def detect_folder(
    model: torch.nn.Module, images_dir: Path, classes: list[str], device: torch.device, min_size: int = 4
) -> list[dict[str, Any]]:
    """Detections of every image in ``images_dir`` in the ``score-detections`` record format."""
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingInput(f"{images_dir}: no images")
    model.to(device).eval()
    dets: list[dict[str, Any]] = []
    for i, path in enumerate(files):
        probs, presence = predict_probs(model, load_image(path, "RGB"), device)
        for b in masks_to_boxes(probs, min_size=min_size, presence=presence):
            dets.append({
                "image": path.stem,
                "class": classes[b.class_id],
                "score": round(b.score, 6),
                "poly": [round(float(v), 2) for v in b.poly.ravel()],
                "hbox": list(b.hbox),
            })
        if (i + 1) % 100 == 0:
            log.info("detect: %d/%d images, %d detections", i + 1, len(files), len(dets))
    return dets


def run_detection(
    model_path: str | Path, data_dir: str | Path, out: str | Path, split: str = "test",
    min_size: int = 4, device: str = "auto",
) -> dict[str, Any]:
    """Load the model, detect over ``data_dir/split/images`` and write ``out`` atomically."""
    from mopeft.device import resolve_device
    from mopeft.methods.checkpoint import check_trained_on, load_model, read_checkpoint, weights_label

    data_dir = Path(data_dir)
    meta = read_json(data_dir / "meta.json")
    classes = list(meta["classes"])
    check_trained_on(read_checkpoint(model_path)["config"], model_path, meta, data_dir / "meta.json")
    model = load_model(model_path)
    if int(model.num_classes) != len(classes):
        raise InputError(
            f"{model_path}: model has {model.num_classes} classes, "
            f"{data_dir / 'meta.json'} lists {len(classes)}"
        )
    dev = resolve_device(device)
    dets = detect_folder(model, data_dir / split / "images", classes, dev, min_size)
    result = {
        "scoring": scoring_mode(model),
        "model": str(model_path),
        "data": str(data_dir),
        "split": split,
        "min_size": min_size,
        # Provenance for Table A.1 (as a segmentation cell's metrics.json records it).
        "weights": weights_label(read_checkpoint(model_path)["config"]),
        "synthetic": bool(meta.get("synthetic", False)),
        "num_images": len({p.stem for p in (data_dir / split / "images").iterdir()}),
        "num_detections": len(dets),
        "detections": dets,
    }
    result["environment"] = record_environment(Path(out).parent)  # its package list beside it
    write_json(out, result, indent=None)
    return result
