"""Pretraining the tiny SAM on generated scenes, so the CPU miniature fine-tunes a model that has
learnt something, as the study fine-tunes SAM's pretrained ViT-B.

A randomly initialised tiny SAM has gradients of ~1e-7: fine-tuning it at the study's optimiser
settings (Adam 1e-4, weight decay 1e-4) moves nothing, and a frozen baseline cannot be told from a
fine-tuned encoder. Here the whole tiny SAM learns class-agnostic foreground segmentation
(:mod:`mopeft.data.synthetic.scenes`) with one mask token, then the weights are written in the
official checkpoint layout (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), so
they load through exactly the code path of ``sam_vit_b_01ec64.pth``.

Determinism: the scenes are pure functions of (seed, index), batches and flips derive from the step,
and training runs on one CPU thread (the thread count changes floating-point reduction order), so
the same code on the same CPU writes a byte-identical checkpoint.
"""

from __future__ import annotations

import io
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mopeft.data.loading.preprocess import PIXEL_MEAN, PIXEL_STD
from mopeft.data.synthetic.scenes import scenes
from mopeft.io import atomic_path, sha256_file
from mopeft.model.arch import build_sam_parts, get_arch
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PretrainSettings:
    arch: str = "tiny"
    steps: int = 1500
    batch_size: int = 16
    pool: int = 2048  # distinct training scenes (generated once; augmented by flips)
    held_out: int = 128  # scenes of another stream, for the reported IoU
    lr: float = 2e-3
    warmup: int = 50
    seed: int = 0
    threads: int = 1


def _normalise(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(PIXEL_STD).view(1, 3, 1, 1)


def foreground_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice of the foreground logit (B,1,h,w) against area-downsampled masks (B,H,W)."""
    target = F.adaptive_avg_pool2d(masks[:, None].float(), logits.shape[-2:])
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
    return bce + dice


def foreground_iou(model: SemanticSAM, images: torch.Tensor, masks: torch.Tensor) -> float:
    """IoU of the thresholded foreground (logits upsampled to full size) over a set of scenes."""
    with torch.no_grad():
        logits = torch.cat([model(images[i : i + 32]) for i in range(0, len(images), 32)])
    pred = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)[:, 0] > 0
    inter = (pred & masks).sum().item()
    union = (pred | masks).sum().item()
    return inter / union if union else 1.0


def _lr_at(step: int, settings: PretrainSettings) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < settings.warmup:
        return settings.lr * (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))


def pretrain(settings: PretrainSettings) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train; return the SAM-layout state dict and a summary (losses, held-out IoU, time)."""
    t0 = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        spec = get_arch(settings.arch)
        size = spec.default_image_size
        torch.manual_seed(settings.seed)
        encoder, prompt, decoder = build_sam_parts(spec, size)
        # One class token = SAM's first mask token; it shares the decoder's modules, so training
        # the SemanticSAM trains ``decoder`` in place.
        model = SemanticSAM(encoder, prompt, decoder, 1, arch=spec.name, image_size=size)
        prompt.no_mask_embed.weight.requires_grad_(True)  # the dense "no prompt" embedding, as in SAM
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=settings.lr)
        images_np, masks_np = scenes(settings.seed, range(settings.pool), size)
        images, masks = _normalise(images_np), torch.from_numpy(masks_np)
        val_np = scenes(settings.seed + 1_000, range(settings.held_out), size)
        val_images, val_masks = _normalise(val_np[0]), torch.from_numpy(val_np[1])
        model.eval()
        iou_before = foreground_iou(model, val_images, val_masks)
        model.train()
        losses: list[float] = []
        per_epoch = settings.pool // settings.batch_size
        for step in progress(range(settings.steps), desc="pretrain", unit="step", mininterval=5):
            epoch, pos = divmod(step, per_epoch)
            perm = torch.randperm(
                settings.pool, generator=torch.Generator().manual_seed(settings.seed + epoch)
            )
            idx = perm[pos * settings.batch_size : (pos + 1) * settings.batch_size]
            flips = torch.rand(
                len(idx), generator=torch.Generator().manual_seed(10_007 * settings.seed + step)
            )
            x, y = images[idx].clone(), masks[idx].clone()
            x[flips < 0.5], y[flips < 0.5] = x[flips < 0.5].flip(-1), y[flips < 0.5].flip(-1)
            for group in opt.param_groups:
                group["lr"] = _lr_at(step, settings)
            loss = foreground_loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        model.eval()
        iou_after = foreground_iou(model, val_images, val_masks)
        with torch.no_grad():
            decoder.mask_tokens.weight[0].copy_(model.mask_decoder.class_tokens.weight[0])
        state = {
            **{f"image_encoder.{k}": v for k, v in encoder.state_dict().items()},
            **{f"prompt_encoder.{k}": v for k, v in prompt.state_dict().items()},
            **{f"mask_decoder.{k}": v for k, v in decoder.state_dict().items()},
        }
        state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    finally:
        torch.set_num_threads(threads)
    summary = {
        "settings": asdict(settings),
        "loss_first_50": float(np.mean(losses[:50])),
        "loss_last_50": float(np.mean(losses[-50:])),
        "held_out_iou_before": iou_before,
        "held_out_iou_after": iou_after,
        "seconds": time.perf_counter() - t0,
        "parameters": sum(v.numel() for v in state.values()),
    }
    return state, summary


def save_state(path: str | Path, state: dict[str, torch.Tensor]) -> str:
    """Write the state dict atomically; return its sha256 (what configs pin).

    Serialised through a buffer: ``torch.save`` to a file names the archive's inner folder after
    the (random) temporary file name, which would change the bytes of identical weights.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return sha256_file(path)
