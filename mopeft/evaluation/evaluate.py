"""Run a trained model over a unit's test split with the MESS protocol, recording gate values.

Logits are mapped back to each label's ORIGINAL size before the argmax (MESS scores at the
prepared resolution), and one confusion matrix accumulates over the whole split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mopeft.data.loader import SegmentationPairs
from mopeft.data.units import load_unit
from mopeft.evaluation.metrics import ConfusionMatrix
from mopeft.io import atomic_path, write_json
from mopeft.model.preprocess import postprocess, preprocess_image
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.peft.recorder import GateRecorder
from mopeft.train.loop import resolve_device

log = logging.getLogger(__name__)


@torch.no_grad()
def predict_split(
    model: SemanticSAM, dataset: SegmentationPairs, device: torch.device
) -> tuple[ConfusionMatrix, dict[str, np.ndarray]]:
    """Confusion matrix over the split + gate values (images x layers) per gate."""
    model.to(device).eval()
    cm = ConfusionMatrix(model.num_classes)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with GateRecorder(model) as rec:
        for i in tqdm(range(len(dataset)), desc="evaluate", mininterval=2):
            # Decode once: the model input is preprocessed here and the raw label is what is scored.
            image, label = dataset.load_raw(i)
            x, input_size = preprocess_image(image, dataset.image_size)
            with autocast:
                logits = model(x[None].to(device))
            full = postprocess(logits.float(), input_size, label.shape)
            pred = full.argmax(dim=1)[0].cpu().numpy()
            cm.update(pred, label)
    return cm, rec.values()


def evaluate_unit(
    model: SemanticSAM,
    dataset_dir: str | Path,
    unit: str,
    out_dir: str | Path,
    kfold: int = 2,
    device: str = "auto",
    context: dict | None = None,
) -> dict:
    """Evaluate and write ``metrics.json``, ``confusion.npy`` and ``gates.npz`` into ``out_dir``."""
    out_dir = Path(out_dir)
    data = load_unit(dataset_dir, unit, kfold)
    if data.num_classes != model.num_classes:
        raise ValueError(
            f"{dataset_dir}/meta.json: {data.num_classes} classes, "
            f"the model was trained for {model.num_classes}"
        )
    cm, gates = predict_split(model, SegmentationPairs(data.test, model.image_size), resolve_device(device))
    result = cm.compute()
    result.update(
        {
            "unit": unit,
            "num_images": len(data.test),
            "classes": list(data.classes),
            "per_class_iou": dict(zip(data.classes, result["per_class_iou"], strict=True)),
            "per_class_acc": dict(zip(data.classes, result["per_class_acc"], strict=True)),
            "gate_means": {k: v.mean(axis=0).tolist() for k, v in gates.items()},
            **(context or {}),
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cm.save(out_dir / "confusion.npy")
    with atomic_path(out_dir / "gates.npz", suffix=".npz.tmp") as tmp, open(tmp, "wb") as f:
        np.savez(f, **gates)
    write_json(out_dir / "metrics.json", result)  # last: its presence means the unit is done
    log.info("%s/%s: mIoU %.2f over %d images", Path(dataset_dir).name, unit, result["miou"], len(data.test))
    return result
