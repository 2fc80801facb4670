"""Training checkpoints: only the trainable tensors + what is needed to rebuild the model.

A ViT-B checkpoint of a PEFT method is a few MB instead of SAM's 375 MB: the frozen base is
rebuilt from the official weights (verified by sha256) or, for random-init runs, from the recorded
seed, and the trainable tensors are loaded on top.

Written as safetensors (``model.safetensors``: readable without mopeft or pickle, e.g. by
``mopeft export``'s consumers), the run's config and the rest of the payload as JSON in its
metadata. Models written before (``model.pt``, torch format ``mopeft-model-v1``) still load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mopeft import __version__
from mopeft.errors import InputError, MissingInput
from mopeft.methods.build import build_model
from mopeft.model.semantic_sam import SemanticSAM
from mopeft.peft.state import load_trainable_state_dict, trainable_state_dict
from mopeft.torch_files import is_safetensors, load_safetensors, load_torch, save_safetensors

FORMAT = "mopeft-model-v2"  # safetensors: the trainable tensors, JSON metadata
TORCH_FORMAT = "mopeft-model-v1"  # torch.save of one dict (model.pt, read only)
MODEL_FILE = "model.safetensors"
EXTRA_PREFIX = "extra/"  # tensors of the payload's extra entries; parameter names never hold "/"
_FIX = (
    f"pass the {MODEL_FILE} that `mopeft train` wrote (or a model.pt from an older mopeft), or train it "
    "again (delete it and rerun)"
)


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


def _split_tensors(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` with every tensor replaced by ``{"$tensor": name}``, the tensor put in ``tensors``."""
    if isinstance(value, torch.Tensor):
        name = EXTRA_PREFIX + path
        tensors[name] = value.detach().cpu()
        return {"$tensor": name}
    if isinstance(value, dict):
        return {k: _split_tensors(v, f"{path}/{k}" if path else str(k), tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_tensors(v, f"{path}/{i}", tensors) for i, v in enumerate(value)]
    return value


def _join_tensors(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`_split_tensors`."""
    if isinstance(value, dict):
        if set(value) == {"$tensor"}:
            return tensors[value["$tensor"]]
        return {k: _join_tensors(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_tensors(v, tensors) for v in value]
    return value


def save_model(path: str | Path, model: SemanticSAM, cfg: dict, extra: dict | None = None) -> None:
    """Write ``model.safetensors`` atomically; identical trainings give identical bytes.

    Tensors: the trainable state under its parameter names, and any tensor of ``extra`` under
    ``extra/<key>/...``. Metadata (str -> str): ``format``, ``mopeft_version``, and ``config`` and
    ``extra`` as JSON, so that other tools can read what the model is without mopeft.
    """
    tensors = dict(trainable_state_dict(model))
    extra_json = _split_tensors(dict(extra or {}), "", tensors)
    metadata = {
        "format": FORMAT,
        "mopeft_version": __version__,
        "config": json.dumps(cfg),
        "extra": json.dumps(extra_json),
    }
    save_safetensors(path, tensors, metadata)


def read_checkpoint(path: str | Path) -> dict:
    """The payload of a model file: ``format``, ``mopeft_version``, ``config``, ``trainable`` (name ->
    tensor) and the ``extra`` entries (``train``, ...), from a ``model.safetensors`` or an older
    ``model.pt``."""
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"{path}: checkpoint not found")
    if not is_safetensors(path):
        payload = load_torch(path, f"it is not a readable mopeft checkpoint; {_FIX}")
        if not isinstance(payload, dict) or payload.get("format") != TORCH_FORMAT:
            raise InputError(f"{path}: not a mopeft model; {_FIX}")
        return payload
    tensors, metadata = load_safetensors(path, f"it is not a readable mopeft checkpoint; {_FIX}")
    if metadata.get("format") != FORMAT:
        raise InputError(f"{path}: not a mopeft model (its metadata has no format {FORMAT!r}); {_FIX}")
    try:
        cfg = json.loads(metadata["config"])
        extra = json.loads(metadata.get("extra", "{}"))
        extra = _join_tensors(extra, tensors)
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(f"{path}: damaged metadata ({type(exc).__name__}: {exc}); {_FIX}") from None
    trainable = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    return {
        **extra,
        "format": FORMAT,
        "mopeft_version": metadata.get("mopeft_version"),
        "config": cfg,
        "trainable": trainable,
    }


def load_model(path: str | Path, weights_path: str | Path | None = None) -> SemanticSAM:
    """Rebuild a trained model from a checkpoint written by :func:`save_model`."""
    payload = read_checkpoint(path)
    model = build_from_config(payload["config"], weights_path)
    load_trainable_state_dict(model, payload["trainable"], source=str(path))
    model.eval()
    return model
