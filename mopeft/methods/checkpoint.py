"""Training checkpoints: only the trainable tensors + what is needed to rebuild the model.

A ViT-B checkpoint of a PEFT method is a few MB instead of SAM's 375 MB: the frozen base is
rebuilt from the official weights (verified by sha256) or, for random-init runs, from the recorded
seed, and the trainable tensors are loaded on top.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mopeft import __version__
from mopeft.errors import InputError, MissingInput
from mopeft.methods.build import build_model
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.peft.state import load_trainable_state_dict, trainable_state_dict
from mopeft.torch_files import load_torch, save_torch

FORMAT = "mopeft-model-v1"


def model_config(
    arch: str,
    num_classes: int,
    method: str,
    method_options: dict,
    image_size: int,
    weights: str | None,
    weights_sha256: str | None,
    init_seed: int,
    classes: list[str] | None = None,
    presence_head: bool = False,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild the model, plus what it was trained on (``dataset``: the
    prepared data's key, ``classes``: its class names), so that evaluation can refuse other data."""
    return {
        "arch": arch,
        "num_classes": num_classes,
        "dataset": dataset,
        "classes": classes,
        "method": method,
        "method_options": dict(method_options),
        "image_size": image_size,
        "weights": weights,
        "weights_sha256": weights_sha256,
        "init_seed": init_seed,
        "presence_head": presence_head,
    }


def weights_label(cfg: dict) -> str:
    """What the base weights were, for provenance: their sha256 or 'random init'."""
    return cfg["weights_sha256"] or ("random init" if cfg["weights"] is None else "unverified")


def check_trained_on(cfg: dict, model_path: str | Path, meta: dict, meta_path: str | Path) -> None:
    """Refuse data other than the model's own: same dataset key and same class names, in order.

    The class count alone is not enough (DeepCrack and Kvasir-Instrument are both 2-class); a
    model scored on another dataset gives a plausible-looking number that means nothing.
    Checkpoints from before the key was recorded are checked on their class names only.
    """
    trained, here = cfg.get("dataset"), meta.get("dataset")
    if trained is not None and here is not None and trained != here:
        raise InputError(
            f"{model_path}: trained on dataset {trained!r}, but {meta_path} is {here!r}; "
            f"pass the prepared folder of {trained!r} (or a model trained on {here!r})"
        )
    classes, names = cfg.get("classes"), meta.get("classes")
    if classes is not None and names is not None and list(classes) != list(names):
        raise InputError(
            f"{model_path}: trained on classes {list(classes)}, but {meta_path} lists {list(names)}; "
            "evaluate on the data the model was trained on (or re-prepare that dataset)"
        )


def build_from_config(cfg: dict, weights_path: str | Path | None = None) -> SemanticSAM:
    """Rebuild the (untrained) model a checkpoint belongs to; random init is seeded for exactness."""
    if weights_path is not None and cfg["weights"] is None:
        # The trained tensors belong to a randomly initialised base; SAM weights under them would be
        # a different (wrong) model.
        raise InputError(
            f"{weights_path}: this model was trained from random init (seed {cfg['init_seed']}), "
            "not from SAM weights; do not pass weights"
        )
    torch.manual_seed(cfg["init_seed"])
    path = weights_path or cfg["weights"]
    model = build_model(
        cfg["arch"],
        cfg["num_classes"],
        cfg["method"],
        cfg["method_options"],
        image_size=cfg["image_size"],
        checkpoint=path,
        checkpoint_sha256=cfg["weights_sha256"],
    )
    if cfg.get("presence_head"):
        from mopeft.model.presence import ClassPresenceMLP

        # New head, trainable whatever the method (like the class tokens it reads).
        model.presence_head = ClassPresenceMLP(model.mask_decoder.class_tokens.embedding_dim)
    return model


def save_model(path: str | Path, model: SemanticSAM, cfg: dict, extra: dict | None = None) -> None:
    """Write ``model.pt`` atomically; identical trainings give identical bytes (:func:`save_torch`)."""
    payload = {
        "format": FORMAT,
        "mopeft_version": __version__,
        "config": cfg,
        "trainable": trainable_state_dict(model),
        **(extra or {}),
    }
    save_torch(path, payload)


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: checkpoint not found")
    payload = load_torch(
        path,
        "it is not a readable mopeft checkpoint: pass the model.pt that `mopeft train` wrote, or train it "
        "again (delete it and rerun)",
    )
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} checkpoint; pass the model.pt that `mopeft train` wrote")
    return payload


def load_model(path: str | Path, weights_path: str | Path | None = None) -> SemanticSAM:
    """Rebuild a trained model from a checkpoint written by :func:`save_model`."""
    payload = read_checkpoint(path)
    model = build_from_config(payload["config"], weights_path)
    load_trainable_state_dict(model, payload["trainable"], source=str(path))
    model.eval()
    return model
