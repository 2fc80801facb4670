"""A folder dataset declared in the config (``custom_datasets``): checked, resolved, and as a spec.

Why a second kind of dataset beside the registry: researchers bring their own images and masks,
and asking them to write a dataset module for a pair of folders would put their data in the
package. A ``custom_datasets`` entry is declared once, in the config; this module turns it into
the :class:`~mopeft.data.spec.DatasetSpec` the DAG reads (units, classes) and into the resolved
JSON that ``mopeft prepare --spec`` prepares (:mod:`mopeft.data.folder.prepare`).

Standard library only: the Snakemake DAG imports it at start-up.

An entry names its files in one of three ways::

    {images: DIR, masks: DIR, test_fraction: 0.2, seed: 0}     # split by a seeded hash of the stems
    {train: {images: DIR, masks: DIR}, test: {images: DIR, masks: DIR}}
    {source: {generate: scenes, count: 24, seed: 0}}           # folders written by `mopeft scenes`

plus ``classes`` (mask value i is class i), optional ``ignore`` (the masks' "not labelled" value,
default 255, prepared as 255), optional ``palette`` (class name -> [r, g, b]: the masks are colour
images; an ``ignore`` colour may be listed under the name ``ignore``), optional ``values`` (class
name -> mask value, for masks that do not number the classes 0..K-1, e.g. 0/255 binary masks:
``{background: 0, object: 255}``; an unlabelled value may be listed under ``ignore``), optional
``allow_missing_classes`` (class names that may have no pixel in a split: preparation otherwise
refuses that, see :mod:`mopeft.data.prepared.coverage`), ``domain`` (default "Custom") and ``name``
(default: the key).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mopeft.data.spec import DatasetSpec
from mopeft.errors import InputError

DEFAULT_DOMAIN = "Custom"
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_IGNORE = 255
IGNORE_COLOUR_KEY = "ignore"  # palette entry for the colour of unlabelled pixels
IGNORE_VALUE_KEY = "ignore"  # `values` entry for the mask value of unlabelled pixels
# The preparer module, imported by name by `mopeft prepare --spec` (the DAG names it as the folder
# datasets' code input, so editing it reruns their preparation only).
PREPARER = "mopeft.data.folder.prepare"
GENERATORS = ("scenes",)  # `source.generate` values: mopeft.data.synthetic.scenes via `mopeft scenes`
_LAYOUTS = ("images/masks", "train/test", "source")


class FolderSpecError(InputError):
    """A custom_datasets entry that cannot be prepared; the message names the config key."""


def _where(key: str, field: str = "") -> str:
    return f"config custom_datasets.{key}{'.' + field if field else ''}"


def _layout(key: str, entry: Mapping[str, Any]) -> str:
    """Which of the three ways the entry names its files (exactly one)."""
    given = [
        name
        for name, fields in zip(_LAYOUTS, (("images", "masks"), ("train", "test"), ("source",)), strict=True)
        if any(f in entry for f in fields)
    ]
    if len(given) != 1:
        raise FolderSpecError(
            f"{_where(key)}: give exactly one of images + masks, train + test (each with images and "
            f"masks), or source: {{generate: scenes, count: N}}; got {given or 'none of them'}"
        )
    layout = given[0]
    if layout == "images/masks" and not ("images" in entry and "masks" in entry):
        raise FolderSpecError(f"{_where(key)}: images and masks go together (both folders are needed)")
    if layout == "train/test":
        for split in ("train", "test"):
            pair = entry.get(split)
            if not isinstance(pair, Mapping) or not {"images", "masks"} <= set(pair):
                raise FolderSpecError(f"{_where(key, split)}: needs images: DIR and masks: DIR")
        if "test_fraction" in entry:
            raise FolderSpecError(
                f"{_where(key, 'test_fraction')}: the train and test folders already split the data; "
                "remove test_fraction (it applies to a single images/masks pair)"
            )
    return layout


def _check_text(key: str, field: str, text: Any) -> None:
    """A name that ends up in a table cell: one line of printable text. Why: a newline (or another
    control character) in a display name breaks the Markdown table row it lands in."""
    if not isinstance(text, str) or not text.strip():
        raise FolderSpecError(f"{_where(key, field)}: a non-empty text, got {text!r}")
    if bad := sorted({ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")}):
        raise FolderSpecError(
            f"{_where(key, field)}: {text!r} contains the control character(s) "
            f"{', '.join(repr(ch) for ch in bad)}; it is printed in table cells: use one line of plain text"
        )


def _check_values(key: str, entry: Mapping[str, Any], classes: list[str]) -> None:
    """``values``: a distinct mask value 0..255 for every class (and optionally ``ignore``)."""
    values = entry["values"]
    if entry.get("palette") is not None:
        raise FolderSpecError(f"{_where(key, 'values')}: give palette (colour masks) or values, not both")
    if "ignore" in entry:
        raise FolderSpecError(
            f"{_where(key, 'ignore')}: with values, give the unlabelled mask value as values.ignore"
        )
    missing = [c for c in classes if c not in values]
    extra = [c for c in values if c not in classes and c != IGNORE_VALUE_KEY]
    if missing or extra:
        raise FolderSpecError(
            f"{_where(key, 'values')}: one mask value per class; missing {missing}, not a class {extra}"
        )
    numbers = list(values.values())
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in numbers):
        raise FolderSpecError(f"{_where(key, 'values')}: mask values are integers 0..255, got {dict(values)}")
    if len(set(numbers)) != len(numbers):
        raise FolderSpecError(f"{_where(key, 'values')}: two names share a mask value: {dict(values)}")


def check_entry(key: str, entry: Mapping[str, Any]) -> None:
    """What the schema cannot express: one way of naming the files, a palette colour (or a mask
    value) for every class, an ignore value that is not also a class id, a split that leaves both
    sides non-empty, display names of one printable line."""
    layout = _layout(key, entry)
    classes = list(entry.get("classes") or [])
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise FolderSpecError(f"{_where(key, 'classes')}: at least two distinct class names, got {classes}")
    for field in ("name", "domain"):
        if field in entry:
            _check_text(key, field, entry[field])
    for i, name in enumerate(classes):
        _check_text(key, f"classes[{i}]", name)
    if unknown := [c for c in entry.get("allow_missing_classes") or [] if c not in classes]:
        raise FolderSpecError(
            f"{_where(key, 'allow_missing_classes')}: {unknown} are not in classes {classes}"
        )
    if entry.get("values") is not None:
        _check_values(key, entry, classes)
    ignore = int(entry.get("ignore", DEFAULT_IGNORE))
    if not 0 <= ignore <= 255:
        raise FolderSpecError(f"{_where(key, 'ignore')}: a mask value 0..255, got {ignore}")
    if ignore < len(classes) and entry.get("values") is None:
        raise FolderSpecError(
            f"{_where(key, 'ignore')}: {ignore} is also the id of class {classes[ignore]!r} "
            f"(mask value i is class i, 0..{len(classes) - 1}); use a value >= {len(classes)}"
        )
    palette = entry.get("palette")
    if palette is not None:
        missing = [c for c in classes if c not in palette]
        extra = [c for c in palette if c not in classes and c != IGNORE_COLOUR_KEY]
        if missing or extra:
            raise FolderSpecError(
                f"{_where(key, 'palette')}: one colour per class; missing {missing}, not a class {extra}"
            )
        colours = [tuple(v) for v in palette.values()]
        if any(len(c) != 3 or not all(isinstance(x, int) and 0 <= x <= 255 for x in c) for c in colours):
            raise FolderSpecError(f"{_where(key, 'palette')}: colours are [r, g, b] with values 0..255")
        if len(set(colours)) != len(colours):
            raise FolderSpecError(f"{_where(key, 'palette')}: two names share a colour")
    fraction = float(entry.get("test_fraction", DEFAULT_TEST_FRACTION))
    if not 0 < fraction < 1:
        raise FolderSpecError(f"{_where(key, 'test_fraction')}: between 0 and 1 (exclusive), got {fraction}")
    if layout == "source":
        source = entry["source"]
        if source.get("generate") not in GENERATORS:
            raise FolderSpecError(f"{_where(key, 'source.generate')}: one of {list(GENERATORS)}")
        if int(source.get("count", 0)) < 2:
            raise FolderSpecError(
                f"{_where(key, 'source.count')}: at least 2 images (a train and a test one)"
            )


def ignore_value(entry: Mapping[str, Any]) -> int | None:
    """The masks' unlabelled value: ``values.ignore`` where ``values`` is given (maybe none),
    else ``ignore`` (default 255)."""
    if entry.get("values"):
        found = entry["values"].get(IGNORE_VALUE_KEY)
        return None if found is None else int(found)
    return int(entry.get("ignore", DEFAULT_IGNORE))


def is_generated(entry: Mapping[str, Any]) -> bool:
    """Are the entry's folders written by a rule (``source``) rather than given by the user?"""
    return "source" in entry


def generated_dir(key: str, raw_dir: str | Path) -> Path:
    """Where `mopeft scenes` writes a generated entry's ``images/`` and ``masks/``."""
    return Path(raw_dir) / key


def folders(key: str, entry: Mapping[str, Any], raw_dir: str | Path) -> dict[str, dict[str, str]]:
    """Split ("all", or "train" and "test") -> {"images": DIR, "masks": DIR}, generated ones resolved."""
    layout = _layout(key, entry)
    if layout == "source":
        root = generated_dir(key, raw_dir)
        return {"all": {"images": str(root / "images"), "masks": str(root / "masks")}}
    if layout == "train/test":
        return {
            s: {"images": str(entry[s]["images"]), "masks": str(entry[s]["masks"])} for s in ("train", "test")
        }
    return {"all": {"images": str(entry["images"]), "masks": str(entry["masks"])}}


def resolve(key: str, entry: Mapping[str, Any], raw_dir: str | Path) -> dict[str, Any]:
    """The checked entry with every default filled in and its folders resolved: the JSON the
    pipeline hands to ``mopeft prepare --spec`` (and all that the preparation depends on)."""
    check_entry(key, entry)
    resolved: dict[str, Any] = {
        "dataset": key,
        "name": str(entry.get("name", key)),
        "domain": str(entry.get("domain", DEFAULT_DOMAIN)),
        "classes": list(entry["classes"]),
        # the masks' unlabelled value (None: every value is a class, as `values` may say)
        "ignore": ignore_value(entry),
        "palette": {k: list(v) for k, v in entry["palette"].items()} if entry.get("palette") else None,
        "values": {k: int(v) for k, v in entry["values"].items()} if entry.get("values") else None,
        "allow_missing_classes": list(entry.get("allow_missing_classes") or []),
        "folders": folders(key, entry, raw_dir),
        "source": dict(entry["source"]) if is_generated(entry) else None,
    }
    if "all" in resolved["folders"]:
        resolved["split"] = {
            "test_fraction": float(entry.get("test_fraction", DEFAULT_TEST_FRACTION)),
            "seed": int(entry.get("seed", 0)),
        }
    else:
        resolved["split"] = None
    return resolved


def spec_from_resolved(resolved: Mapping[str, Any]) -> DatasetSpec:
    """The DatasetSpec of a resolved entry: one ``main`` unit, no published test count."""
    return DatasetSpec(
        key=resolved["dataset"],
        name=resolved["name"],
        domain=resolved["domain"],
        classes=tuple(resolved["classes"]),
        sources=(),
        expected_test=None,
        vocabulary="Custom",
        task_description="folder dataset (config custom_datasets)",
    )


def folder_spec(key: str, entry: Mapping[str, Any]) -> DatasetSpec:
    """The DatasetSpec of a config entry (the folders do not matter for the spec)."""
    return spec_from_resolved(resolve(key, entry, "."))


def lookup_spec(key: str, custom: Mapping[str, Mapping[str, Any]]) -> DatasetSpec:
    """The spec of ``key``: a config-declared folder dataset, else the registry's dataset. The one
    look-up for everything that asks what a dataset is (units, k-fold, classes)."""
    if key in custom:
        return folder_spec(key, custom[key])
    from mopeft.data.registry import get_spec

    return get_spec(key)
