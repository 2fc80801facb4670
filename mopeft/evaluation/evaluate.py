"""Run a trained model over a unit's test split with the MESS protocol, recording gate values.

Logits are mapped back to each label's ORIGINAL size before the argmax (MESS scores at the
prepared resolution), and one confusion matrix accumulates over the whole split.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mopeft.data.images import check_label_files
from mopeft.data.loading.loader import SegmentationPairs, make_loader
from mopeft.data.loading.preprocess import IGNORE_INDEX, postprocess, to_model_input
from mopeft.data.prepared.layout import hashed_order
from mopeft.data.prepared.units import load_unit
from mopeft.device import autocast, resolve_device
from mopeft.environment import record_environment
from mopeft.errors import InputError
from mopeft.evaluation.metrics import ConfusionMatrix
from mopeft.io import atomic_dir, atomic_path, write_json, write_npz
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.peft.recorder import GateRecorder
from mopeft.progress import progress

log = logging.getLogger(__name__)

EXAMPLES_SEED = 0  # which test images Fig. 4.1 shows: the first few in hashed_order(stems, 0)


class DeviceConfusion:
    """MESS's confusion matrix accumulated where the predictions are, with no host copy per image.

    Every pixel adds 1 at ``pred·(K+1) + gt`` of a flat (K+1)² counter (ignored GT pixels go to a
    spare bin), via ``scatter_add_``, which needs no data-dependent size (``bincount`` and boolean
    indexing would each wait for the device). Per image it also keeps the K × (tp, fp, fn) counts,
    enough to rebuild the statistics of any subset of images (bootstrap intervals).
    """

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.k = num_classes
        self.counts = torch.zeros((num_classes + 1) ** 2 + 1, dtype=torch.long, device=device)
        self.per_image: list[torch.Tensor] = []

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        k = self.k
        gt = gt.long()
        idx = torch.where(gt == IGNORE_INDEX, (k + 1) ** 2, pred.long() * (k + 1) + gt.clamp(max=k))
        image = torch.zeros_like(self.counts).scatter_add_(0, idx.flatten(), torch.ones_like(idx.flatten()))
        self.counts += image
        m = image[: (k + 1) ** 2].view(k + 1, k + 1)
        tp = m.diagonal()[:k]
        self.per_image.append(torch.stack([tp, m[:k, :k].sum(1) - tp, m.sum(0)[:k] - tp], dim=1))

    def result(self, source: str) -> tuple[ConfusionMatrix, np.ndarray]:
        """The host-side ConfusionMatrix and the (N, K, 3) per-image counts (one device read)."""
        k = self.k
        matrix = self.counts[: (k + 1) ** 2].view(k + 1, k + 1).cpu().numpy()
        if matrix[:, k].any():
            raise InputError(f"{source}: ground truth has values outside 0..{k - 1} (and not 255)")
        cm = ConfusionMatrix(k)
        cm.matrix = matrix.astype(np.int64)
        stats = torch.stack(self.per_image).cpu().numpy() if self.per_image else np.zeros((0, k, 3))
        return cm, stats.astype(np.int64)


def predicted_labels(model: SemanticSAM, batch: dict, device: torch.device) -> list[torch.Tensor]:
    """Class ids (H0, W0) on the device of every image of a loader batch, at its original size:
    logits -> :func:`postprocess` (crop the padding, resize to the original) -> argmax. The one
    prediction path of ``mopeft evaluate`` and ``mopeft predict``, so a prediction PNG scores
    exactly as the evaluation did."""
    images = batch["images"].to(device, non_blocking=True)
    sizes = batch["sizes"].to(device, non_blocking=True)
    with autocast(device):
        logits = model(to_model_input(images, sizes))
    preds = []
    for i, original in enumerate(batch["original_sizes"]):
        hw = tuple(int(v) for v in batch["sizes"][i])
        preds.append(postprocess(logits[i : i + 1].float(), hw, original).argmax(dim=1)[0])
    return preds


@torch.no_grad()
def predict_split(
    model: SemanticSAM,
    dataset: SegmentationPairs,
    device: torch.device,
    batch_size: int = 4,
    workers: int = 0,
    on_prediction: Callable[[int, torch.Tensor], None] | None = None,
) -> tuple[ConfusionMatrix, dict[str, np.ndarray], np.ndarray]:
    """Confusion matrix over the split, gate values (images x layers) per gate, and the per-image
    (N, K, 3) tp/fp/fn counts. Batches come from the same loader as training; logits go back to
    each label's original size and the argmax runs on the device. ``on_prediction(index, ids)``,
    if given, sees every image's class ids (on the device) as they are scored."""
    model.to(device).eval()
    confusion = DeviceConfusion(model.num_classes, device)
    loader = make_loader(
        dataset,
        batch_size=batch_size,
        workers=workers,
        pin_memory=device.type == "cuda",
        keep_raw_labels=True,
    )
    with GateRecorder(model) as rec:
        for batch in progress(loader, desc="evaluate", unit="batch", mininterval=2):
            preds = predicted_labels(model, batch, device)
            for i, (pred, label) in enumerate(zip(preds, batch["raw_labels"], strict=True)):
                gt = torch.from_numpy(np.ascontiguousarray(label)).to(device, non_blocking=True)
                confusion.update(pred, gt)
                if on_prediction is not None:
                    on_prediction(int(batch["indices"][i]), pred)
    cm, per_image = confusion.result(str(dataset.pairs[0][1].parent))
    return cm, rec.values(), per_image


def save_class_ids(path: str | Path, ids: np.ndarray) -> None:
    """A prediction as a single-channel uint8 PNG of class ids (what ``mopeft score`` reads), atomically."""
    if ids.ndim != 2 or int(ids.max(initial=0)) > 254:
        raise ValueError(f"{path}: class ids must be HxW with values < 255, got {ids.shape}")
    with atomic_path(path) as tmp:
        Image.fromarray(ids.astype(np.uint8), mode="L").save(tmp, format="PNG")


def evaluate_unit(
    model: SemanticSAM,
    dataset_dir: str | Path,
    unit: str,
    out_dir: str | Path,
    kfold: int = 2,
    device: str = "auto",
    context: dict | None = None,
    batch_size: int = 4,
    workers: int = 0,
    examples: int = 0,
) -> dict:
    """Evaluate and write ``metrics.json``, ``confusion.npy``, ``gates.npz`` and ``per_image.npz``
    (the test images' names and their K x (tp, fp, fn) counts) into ``out_dir``; with ``examples``
    > 0 also ``examples/<stem>.png``, the predictions of the unit's first ``examples`` test images
    in :func:`~mopeft.data.prepared.layout.hashed_order` (Fig. 4.1 shows them beside the ground truth)."""
    out_dir = Path(out_dir)
    data = load_unit(dataset_dir, unit, kfold)
    if data.num_classes != model.num_classes:
        raise InputError(
            f"{dataset_dir}/meta.json: {data.num_classes} classes, "
            f"the model was trained for {model.num_classes}"
        )
    check_label_files([label for _, label in data.test], data.num_classes)  # before any forward pass
    position = {img.stem: i for i, (img, _) in enumerate(data.test)}
    chosen = {position[s]: s for s in hashed_order(list(position), EXAMPLES_SEED)[:examples]}
    kept: dict[str, np.ndarray] = {}

    def keep(index: int, ids: torch.Tensor) -> None:
        if index in chosen:
            kept[chosen[index]] = ids.to(torch.uint8).cpu().numpy()

    cm, gates, per_image = predict_split(
        model,
        SegmentationPairs(data.test, model.image_size),
        resolve_device(device),
        batch_size,
        workers,
        on_prediction=keep if chosen else None,
    )
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
    if examples:
        with atomic_dir(out_dir / "examples") as tmp:
            for stem, ids in kept.items():
                save_class_ids(tmp / f"{stem}.png", ids)
    cm.save(out_dir / "confusion.npy")
    names = np.array([img.name for img, _ in data.test])
    write_npz(out_dir / "per_image.npz", images=names, counts=per_image)
    write_npz(out_dir / "gates.npz", **gates)
    result["environment"] = record_environment(out_dir)  # after the scores: no rerun differs by it
    write_json(out_dir / "metrics.json", result)  # last: its presence means the unit is done
    log.info("%s/%s: mIoU %.2f over %d images", Path(dataset_dir).name, unit, result["miou"], len(data.test))
    return result
