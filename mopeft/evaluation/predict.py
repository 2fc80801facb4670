"""Apply a trained model to a folder of images: class-id PNGs (and colour overlays) per image.

The predictions take :func:`mopeft.evaluation.evaluate.predicted_labels`, the path evaluation
scores, at each image's original size; the PNGs are what ``mopeft score`` reads (single-channel
class ids, the images' stems), so predicting a prepared test split and scoring it against its
labels gives the evaluation's mIoU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mopeft.data.colours import overlay
from mopeft.data.images import files_by_stem, load_image, save_image
from mopeft.data.loading.loader import ImageFiles, make_loader
from mopeft.evaluation.evaluate import predicted_labels, save_class_ids
from mopeft.io import write_json
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.progress import progress

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
OVERLAY_DIR = "overlay"  # a sub-folder: `mopeft score --pred OUT` reads only OUT's own PNGs


@torch.no_grad()
def predict_folder(
    model: SemanticSAM,
    images_dir: str | Path,
    out_dir: str | Path,
    device: torch.device,
    batch_size: int = 4,
    workers: int = 0,
    overlays: bool = False,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``out_dir/<stem>.png`` (class ids) for every image of ``images_dir`` (and
    ``out_dir/overlay/<stem>.png`` with ``overlays``), then ``out_dir/predict.json`` (the class
    names behind the ids, the model, the image count). Returns that summary."""
    files = list(files_by_stem(images_dir, IMAGE_SUFFIXES, "image").values())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device).eval()
    dataset = ImageFiles(files, model.image_size)
    loader = make_loader(dataset, batch_size=batch_size, workers=workers, pin_memory=device.type == "cuda")
    with progress(total=len(files), desc="predict", unit="image", mininterval=2) as bar:
        for batch in loader:
            for index, pred in zip(
                batch["indices"].tolist(), predicted_labels(model, batch, device), strict=True
            ):
                ids = pred.to(torch.uint8).cpu().numpy()
                path = files[index]
                save_class_ids(out_dir / f"{path.stem}.png", ids)
                if overlays:
                    blended = overlay(load_image(path, "RGB"), ids, model.num_classes)
                    save_image(out_dir / OVERLAY_DIR / f"{path.stem}.png", np.ascontiguousarray(blended))
            bar.update(len(batch["indices"]))
    summary = {"images": len(files), "num_classes": model.num_classes, **(context or {})}
    write_json(out_dir / "predict.json", summary)
    log.info("predicted %d images into %s", len(files), out_dir)
    return summary


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def summary_line(summary: dict[str, Any], out_dir: str | Path, overlays: bool) -> str:
    """What ``mopeft predict`` prints: what it wrote and where, in words.

    Why not ``f"{out}: {n} predictions"``: with the README's ``--out predictions/`` that read
    "predictions: 5 predictions", which says neither what the files are nor where the class names
    and overlays went.
    """
    out_dir = Path(out_dir)
    n = int(summary["images"])
    line = f"wrote {_count(n, 'class-id PNG')} to {out_dir} (class names: {out_dir / 'predict.json'})"
    if overlays:
        line += f" and {_count(n, 'colour overlay')} to {out_dir / OVERLAY_DIR}"
    return line
