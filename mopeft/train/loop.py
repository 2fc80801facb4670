"""The training loop: Adam, CE + Dice, bf16 autocast on CUDA, deterministic and resumable.

Determinism is built from the step index, not from iterator state: the batch of step ``t`` is a
slice of a permutation seeded by (seed, epoch), and its flip augmentation is seeded by (seed, t).
Together with the optimiser state saved in the resume file, a run killed at any point and started
again reaches bit-identical final weights on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from mopeft.data.loader import SegmentationPairs
from mopeft.detection.head import presence_loss, presence_targets
from mopeft.io import atomic_path
from mopeft.model.build import load_trainable_state_dict, trainable_state_dict
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.train.losses import segmentation_loss
from mopeft.train.optim import make_optimizer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 1e-4
    ce_weight: float = 0.2
    dice_weight: float = 0.8
    presence_weight: float = 1.0  # class-MLP BCE, only for models with a presence head (FAIR-1M)
    seed: int = 0
    checkpoint_every: int = 100
    hflip: bool = True
    device: str = "auto"


def steps_for_epochs(num_items: int, batch_size: int, epochs: int) -> int:
    return math.ceil(num_items / batch_size) * epochs


def batch_indices(num_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of step ``step``'s batch: epoch-wise permutations seeded by (seed, epoch)."""
    per_epoch = math.ceil(num_items / batch_size)
    epoch, pos = divmod(step, per_epoch)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(num_items, generator=gen)
    return perm[pos * batch_size : (pos + 1) * batch_size].tolist()


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _collate(
    dataset: SegmentationPairs, indices: list[int], flip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[i] for i in indices]
    images = torch.stack([it["image"] for it in items])
    labels = torch.stack([it["label"] for it in items])
    # Flip whole padded squares: the padding moves to the left, which SAM tolerates and keeps
    # image/label alignment exact.
    images[flip] = images[flip].flip(-1)
    labels[flip] = labels[flip].flip(-1)
    return images, labels


def fingerprint(model: SemanticSAM, settings: TrainSettings, dataset: SegmentationPairs) -> str:
    """Identifies a training run so a resume file from a different run is never picked up."""
    blob = json.dumps(
        {
            "settings": asdict(settings) | {"device": None, "checkpoint_every": None},
            "method": model.method,
            "options": model.method_options,
            "pairs": [str(p[0].name) for p in dataset.pairs],
            "trainable": sorted(n for n, p in model.named_parameters() if p.requires_grad),
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def train(
    model: SemanticSAM,
    dataset: SegmentationPairs,
    settings: TrainSettings,
    resume_path: str | Path,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train in place; returns the loss of every step. Saves a resume file every
    ``checkpoint_every`` steps and at the end (atomically)."""
    resume_path = Path(resume_path)
    device = resolve_device(settings.device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"method {model.method!r} has no trainable parameters")
    opt = make_optimizer(params, settings.lr, settings.weight_decay, device)
    fp = fingerprint(model, settings, dataset)
    start, losses = 0, []
    if resume_path.exists():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fp:
            load_trainable_state_dict(model, state["trainable"], source=str(resume_path))
            opt.load_state_dict(state["optimizer"])
            start, losses = int(state["step"]), list(state["losses"])
            log.info("resuming from %s at step %d/%d", resume_path, start, settings.steps)
        else:
            log.warning("%s belongs to a different run; starting from scratch", resume_path)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, desc="train", mininterval=2)
    t0 = time.perf_counter()
    for step in bar:
        idx = batch_indices(len(dataset), settings.batch_size, step, settings.seed)
        gen = torch.Generator().manual_seed(settings.seed * 7_368_787 + step)
        flip = (torch.rand(len(idx), generator=gen) < 0.5) & settings.hflip
        images, labels = _collate(dataset, idx, flip)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast:
            logits, tokens = model.forward_with_tokens(images)
        loss = segmentation_loss(logits, labels, settings.ce_weight, settings.dice_weight)
        if model.presence_head is not None:
            presence = model.presence_head(tokens.float())
            target = presence_targets(labels, model.num_classes)
            loss = loss + settings.presence_weight * presence_loss(presence, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            _save_resume(resume_path, model, opt, step + 1, losses, fp)
        if on_step is not None:
            on_step(step, losses[-1])
    log.info("trained %d steps in %.1f s", settings.steps - start, time.perf_counter() - t0)
    return losses


def _save_resume(
    path: Path, model: SemanticSAM, opt: torch.optim.Optimizer, step: int, losses: list[float], fp: str
) -> None:
    state = {
        "fingerprint": fp,
        "step": step,
        "losses": losses,
        "trainable": trainable_state_dict(model),
        "optimizer": opt.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
