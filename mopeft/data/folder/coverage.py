"""Why a folder dataset's class has no pixel, worked out from its masks, for the coverage error.

:mod:`mopeft.data.prepared.coverage` refuses a class without pixels in a split; for a registered dataset
the cause is the project's preparer, but a folder dataset's masks were made by the person reading
the error, so the message says what in *their* masks or config causes it and the exact fix. The
commonest case by far: binary masks saved as 0/255, whose 255 is also the default ``ignore`` value,
so every foreground pixel is ignored and the foreground class never occurs (the cell would report
mIoU 100 with the foreground's IoU None). The statistics are gathered while the masks are read
anyway (a histogram per mask), not in a second pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mopeft.data.prepared.coverage import CoverageRules, Missing, histogram

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_ .-]*")
_YAML_WORDS = {"yes", "no", "y", "n", "true", "false", "on", "off", "null", "~"}


class MaskStats:
    """Per split: the histogram of the raw (single-channel) mask values, how many prepared labels
    hold each class, and how many labels there are."""

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.raw_values: dict[str, np.ndarray] = {}
        self.images_with: dict[str, np.ndarray] = {}
        self.images: dict[str, int] = {}

    def raw(self, split: str) -> np.ndarray:
        """The split's 256-bin raw-value histogram (filled by `folder.prepare.read_mask`)."""
        return self.raw_values.setdefault(split, np.zeros(256, dtype=np.int64))

    def add(self, split: str, label: np.ndarray) -> None:
        present = histogram(label)[: self.num_classes] > 0
        self.images_with[split] = self.images_with.get(split, 0) + present.astype(np.int64)
        self.images[split] = self.images.get(split, 0) + 1

    def labelled_anywhere(self, index: int) -> bool:
        return any(int(counts[index]) > 0 for counts in self.images_with.values())


def _yaml_key(name: str) -> str:
    """``name`` as a YAML flow-mapping key, quoted where YAML would read it otherwise."""
    plain = _PLAIN.fullmatch(name) and name.lower() not in _YAML_WORDS and name == name.strip()
    return name if plain else json.dumps(name)


def values_fix(classes: Sequence[str], name: str, value: int) -> str:
    """``values: {a: 0, b: 255}``: every class at its id, ``name`` at ``value``."""
    pairs = ", ".join(f"{_yaml_key(c)}: {value if c == name else i}" for i, c in enumerate(classes))
    return f"values: {{{pairs}}}"


def _absent_everywhere(name: str, resolved: Mapping[str, Any], stats: MaskStats) -> str:
    """The cause when no mask of any split labels ``name``."""
    classes, key = list(resolved["classes"]), resolved["dataset"]
    index = classes.index(name)
    if resolved.get("palette"):
        return f"no mask holds its palette colour {list(resolved['palette'][name])}"
    if resolved.get("values"):
        value = resolved["values"][name]
        return f"no mask holds the value {value} that config custom_datasets.{key}.values gives it"
    found = [int(v) for v in np.flatnonzero(sum(stats.raw_values.values(), np.zeros(256, dtype=np.int64)))]
    shown = "{" + ", ".join(map(str, found)) + "}"
    ignore = resolved.get("ignore")
    unlabelled = [c for i, c in enumerate(classes) if not stats.labelled_anywhere(i)]
    if ignore in found and unlabelled == [name]:
        return (
            f"the masks hold only the values {shown}, none the value {index}, and {ignore} is `ignore` "
            f"(config custom_datasets.{key}.ignore, default 255), so every {ignore} pixel is ignored: "
            f"if {ignore} marks {name!r} (as in the common 0/255 binary mask), map {ignore} to class "
            f"{index} with `{values_fix(classes, name, ignore)}` in config custom_datasets.{key}; if "
            f"{ignore} really is unlabelled, no mask labels {name!r}"
        )
    return (
        f"no mask holds the value {index} (the masks hold {shown}): mask value i is class i of "
        f"`classes`; if the masks number the classes otherwise, map them with `values:`, else remove "
        "the class"
    )


def _absent_in(name: str, resolved: Mapping[str, Any], stats: MaskStats) -> str:
    """The cause when ``name`` is labelled in some split but not in another: the counts per split."""
    index = list(resolved["classes"]).index(name)
    held = [f"{int(stats.images_with[s][index])} of {stats.images[s]} {s} masks" for s in stats.images]
    return f"it is labelled in {' and '.join(held)}"


def _split_fix(resolved: Mapping[str, Any], splits: Sequence[str]) -> str:
    """What gives a split the images of a class that the other split has."""
    if "all" in resolved["folders"]:
        key = resolved["dataset"]
        return (
            f"add images that show it, or change config custom_datasets.{key}.seed or test_fraction "
            "(or give train and test folders)"
        )
    return f"add images that show it to the {' and '.join(sorted(set(splits)))} folder"


def explain(missing: Sequence[Missing], resolved: Mapping[str, Any], stats: MaskStats) -> str:
    """The likely cause of each missing class (the first three), from the masks' statistics, and
    the fix for a class that one split has and another lacks."""
    names = list(dict.fromkeys(m.name for m in missing))
    causes, split_only = [], []
    for name in names[:3]:
        if not stats.labelled_anywhere(list(resolved["classes"]).index(name)):
            cause = _absent_everywhere(name, resolved, stats)
        else:
            split_only += [m.split for m in missing if m.name == name]
            cause = _absent_in(name, resolved, stats)
        causes.append(cause if len(names) == 1 else f"{name!r}: {cause}")
    if split_only:
        causes.append(_split_fix(resolved, split_only))
    return "; ".join(causes)


def coverage_rules(resolved: Mapping[str, Any], stats: MaskStats) -> CoverageRules:
    """How :func:`mopeft.data.prepared.write.write_prepared` judges this folder dataset's coverage."""
    key = resolved["dataset"]
    return CoverageRules(
        allow=frozenset(resolved.get("allow_missing_classes") or ()),
        explain=lambda missing: explain(missing, resolved, stats),
        allow_hint=f"if that is expected, list it in config custom_datasets.{key}.allow_missing_classes",
    )
