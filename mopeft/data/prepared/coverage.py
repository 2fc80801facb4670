"""Pixels per class and split of a prepared dataset, and the check that every class occurs.

Why at prepare time: a class with no pixel in the test split has no IoU (the evaluation reports
None and averages over the other classes, so a mask encoding that turns the only foreground class
into ``ignore`` scores mIoU 100), and a class with no pixel in the train split is never learnt. Both
are nearly always a preparation mistake (an ``ignore`` value that swallows a class, masks numbered
1..K, a split too small for a rare class), and both are cheap to see while the labels are checked:
one histogram per label (``np.bincount``), summed per split. For a folder dataset (the user's own
masks) they are refused here, naming the dataset, the class and the likely cause, unless the config
declares the absence as expected. A registered dataset's content is fixed by its published release
(and a real release cannot be tried here), so there an unexpected absence is a warning naming the
class, recorded in ``meta.json`` and in the tables' notes, not a refusal after hours of download.

The counts go into ``meta.json`` (``pixels``: per split, ``per_class`` in class order and
``ignore``), whether or not a class is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mopeft.data.errors import PrepareError
from mopeft.data.images import IGNORE
from mopeft.data.spec import DatasetSpec

log = logging.getLogger(__name__)


def histogram(label: np.ndarray) -> np.ndarray:
    """The 256-bin histogram of a uint8 label (int64): one pass, no sort (``np.unique`` sorts)."""
    return np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256).astype(np.int64)


@dataclass(frozen=True)
class Missing:
    """A class without a single pixel in one split (``test``, ``train``, ``<task>/test``...)."""

    split: str
    index: int
    name: str


@dataclass(frozen=True)
class CoverageRules:
    """How one dataset is judged: the class names allowed to be absent, a function giving the
    likely cause of an absence (from what only the preparer knows, e.g. the raw mask values), and
    where the user declares an expected absence."""

    allow: Collection[str] = field(default_factory=frozenset)
    explain: Callable[[Sequence[Missing]], str] | None = None
    allow_hint: str = ""


def pixels_meta(pixels: Mapping[str, np.ndarray], num_classes: int) -> dict[str, dict]:
    """``meta.json``'s ``pixels``: per split, the pixel count of each class (in class order) and of
    the ignore value."""
    return {
        split: {"per_class": [int(v) for v in hist[:num_classes]], "ignore": int(hist[IGNORE])}
        for split, hist in sorted(pixels.items())
    }


def find_missing(
    spec: DatasetSpec, pixels: Mapping[str, np.ndarray], items: Mapping[str, int]
) -> list[Missing]:
    """Every (split, class) without a pixel; a split without items (the train split of a k-fold
    dataset) is not judged."""
    return [
        Missing(split, i, name)
        for split, hist in sorted(pixels.items(), key=lambda kv: _split_order(kv[0]))
        if items.get(split, 0) > 0
        for i, name in enumerate(spec.classes)
        if hist[i] == 0
    ]


def _split_order(split: str) -> tuple[str, int]:
    """Task first, then train before test (as people say it)."""
    task, _, name = split.rpartition("/")
    return task, 0 if name == "train" else 1


def describe(missing: Sequence[Missing]) -> str:
    """``class 'x' has no pixel in the test split`` / ``classes 'x' (test), 'y' (train, test) ...``."""
    splits: dict[str, list[str]] = {}
    for m in missing:
        splits.setdefault(m.name, []).append(m.split)
    if len(splits) == 1:
        ((name, where),) = splits.items()
        return f"class {name!r} has no pixel in the {' or '.join(where)} split{'s' if len(where) > 1 else ''}"
    listed = ", ".join(f"{name!r} ({', '.join(where)})" for name, where in splits.items())
    return f"classes {listed} have no pixel in those splits"


def registered_cause(spec: DatasetSpec) -> str:
    """The likely cause for a registered dataset, whose preparer is the project's code."""
    return (
        f"the preparer (mopeft/data/datasets/{spec.key}.py) maps no mask value to it: a changed "
        "release or a mapping bug, or this release really lacks it (then declare it in the SPEC's "
        "allow_missing_classes)"
    )


def check_coverage(
    spec: DatasetSpec,
    pixels: Mapping[str, np.ndarray],
    items: Mapping[str, int],
    rules: CoverageRules,
    mode: str = "error",
) -> dict[str, list[str]]:
    """Judge absent classes that ``rules`` do not allow: ``mode`` "error" refuses them (a folder
    dataset), "warn" logs them (a registered release), "record" only returns them (a generated
    miniature, whose few images cannot hold every class). Returns every absence, split -> class
    names, for ``meta.json``."""
    if mode not in ("error", "warn", "record"):
        raise ValueError(f"mode must be 'error', 'warn' or 'record', got {mode!r}")
    missing = find_missing(spec, pixels, items)
    refused = [m for m in missing if m.name not in rules.allow]
    if refused and mode != "record":
        cause = rules.explain(refused) if rules.explain else registered_cause(spec)
        shown = spec.key if spec.name == spec.key else f"{spec.key} ({spec.name})"
        if mode == "error":
            hint = rules.allow_hint or f"declare it in {spec.key}'s allow_missing_classes"
            raise PrepareError(f"dataset {shown}: {describe(refused)}: {cause}; {hint}")
        log.warning(
            "dataset %s: %s (%s); its IoU will be empty there and the tables say so",
            shown,
            describe(refused),
            cause,
        )
    out: dict[str, list[str]] = {}
    for m in missing:
        out.setdefault(m.split, []).append(m.name)
    return out
