"""The GPU jobs of a run, read from its config: every ``train``, ``evaluate`` and ``detect`` job the
Snakemake DAG plans (dataset × method × variant × seed × unit), with the sizes that decide its cost.

Why here and not parsed from a dry run: the resource model must work without Snakemake and
without data. The grid rules are the pipeline's (``mopeft.plan.workflow``: main cells,
ablation variants named by their table's label, the detection chain; both read :func:`run_grid`);
``tests/test_resource_model.py`` checks that this list equals the jobs of the study's dry run.

Sizes come from the prepared ``meta.json`` where the dataset is prepared (its ``counts``), else
from the registry's published split sizes (``DatasetSpec.expected_train`` / ``expected_test``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopeft.data.folder.spec import lookup_spec
from mopeft.data.spec import DatasetSpec
from mopeft.errors import InputError
from mopeft.io import read_json
from mopeft.methods.registry import method_spec, peft_method_options
from mopeft.report.registry import TABLES

GPU_RULES = ("train", "evaluate", "detect")


@dataclass(frozen=True)
class Job:
    """One GPU job. ``items``: training images (train) or test images (evaluate, detect)."""

    rule: str
    dataset: str
    method: str
    variant: str
    seed: int
    unit: str
    options: tuple  # the variant's method options as sorted (key, value) pairs
    num_classes: int
    items: int
    steps: int  # training steps (0 for evaluate/detect)
    image_format: str
    image_hw: tuple[int, int]
    max_image_hw: tuple[int, int]
    size_source: str  # "meta.json", "registry" or "folder" (a config folder dataset's files)
    presence_head: bool = False

    @property
    def key(self) -> str:
        """The job's name in the plan (and in mopeft.plan.workflow's look-up)."""
        return "/".join((self.rule, self.dataset, self.method, self.variant, f"seed{self.seed}", self.unit))


def variant_name(study: Mapping[str, Any], value: Any, method: str) -> tuple[str, tuple]:
    """(cell variant, its options) of an ablation value: ``default`` for the method's own value."""
    table = TABLES[study["table"]]
    default = method_spec(method).defaults[table.option]
    if value == default:
        return "default", ()
    return f"{table.variant_label}{value}", ((table.option, value),)


def units(spec: DatasetSpec, kfold: int) -> list[str]:
    """Training/evaluation units of a dataset (the DAG's ``{unit}``): its tasks (PAXRay-4), k folds
    when it has no labelled train split, else ``main``."""
    if spec.tasks:
        return list(spec.tasks)
    if spec.train_split == "none":
        return [f"fold{i}" for i in range(kfold)]
    return ["main"]


def folder_sizes(key: str, entry: Mapping[str, Any], raw_dir: str) -> tuple[int, int]:
    """(train, test) items of a config folder dataset before it is prepared: the images in its
    folders (or the count it generates), split by its ``test_fraction``."""
    from mopeft.data.folder.spec import resolve

    resolved = resolve(key, entry, raw_dir)

    def files(part: str) -> int:
        folder = Path(resolved["folders"][part]["images"])
        return sum(1 for p in folder.iterdir() if p.is_file()) if folder.is_dir() else 0

    if resolved["split"] is None:
        return files("train"), files("test")
    total = int(resolved["source"]["count"]) if resolved["source"] else files("all")
    test = max(1, round(total * resolved["split"]["test_fraction"]))
    return total - test, test


def unit_sizes(
    spec: DatasetSpec, unit: str, kfold: int, meta: dict | None, folder: tuple[int, int] | None = None
) -> tuple[int, int, str]:
    """(train items, test items, where from) of one unit."""
    if folder is not None and not (meta and meta.get("counts")):
        train, test, source = folder[0], folder[1], "folder"
    elif meta is not None and meta.get("counts"):
        counts = meta["counts"]
        prefix = f"{unit}/" if spec.tasks else ""
        train, test = counts.get(prefix + "train", 0), counts.get(prefix + "test", 0)
        source = "meta.json"
    else:
        train, test = spec.expected_train or 0, spec.expected_test or 0
        source = "registry"
    if (
        spec.train_split == "none" and source != "folder"
    ):  # fold i trains on the other folds and is tested on fold i
        pool = test
        test = math.ceil(pool / kfold)
        train = pool - test
    if not train or not test:
        raise ValueError(
            f"dataset {spec.key!r}: no train/test size known ({source}); prepare it first "
            f"(`mopeft prepare`), or give its published split sizes in its DatasetSpec"
        )
    return train, test, source


@dataclass(frozen=True)
class Grid:
    """What a run builds, from the config sections that name datasets, each trimmed to the datasets
    the run lists. Why: a user config of only ``custom_datasets`` + ``datasets`` merges over the
    study's config/config.yaml, whose detection, ablation and figure sections name FAIR-1M and
    MESS datasets that run is not given; those parts are left out (``notes`` says which) instead
    of refusing the config. The DAG (mopeft.plan.workflow) and the resource plan read this."""

    segmentation: tuple[str, ...]  # the run's datasets except detection.dataset
    detection: tuple[str, ...]  # detection methods run; none when detection.dataset is not listed
    studies: tuple[Mapping[str, Any], ...]  # ablation studies on their listed datasets (none: dropped)
    gate_datasets: tuple[str, ...]  # Figure 4.2's datasets
    notes: tuple[str, ...]  # what was trimmed, one phrase each

    def note_line(self) -> str:
        """The notes as the one line the workflow prints ("" when nothing was trimmed)."""
        if not self.notes:
            return ""
        return f"config: {'; '.join(self.notes)} (list them in `datasets` to run them)"


def _names(values: list[str]) -> str:
    return ", ".join(values)


def run_grid(config: Mapping[str, Any]) -> Grid:
    """The run's :class:`Grid`. Sections are trimmed, never filled in, except Figure 4.2: it only
    reads MoPEFT's main cells (no job of its own), so when none of its datasets is listed it
    shows the run's segmentation datasets. An explicitly empty list stays empty (nothing is
    built, and nothing is said)."""
    listed = list(config["datasets"])
    det = config["detection"]
    seg = [d for d in listed if d != det["dataset"]]
    notes: list[str] = []
    detection = list(det["methods"])
    if detection and det["dataset"] not in listed:
        detection = []
        notes.append(f"detection skipped: {det['dataset']!r} is not listed in `datasets`")
    studies: list[Mapping[str, Any]] = []
    skipped: list[Mapping[str, Any]] = []
    for study in config["ablations"]["studies"]:
        kept = [d for d in study["datasets"] if d in seg]
        unlisted = [d for d in study["datasets"] if d not in listed]
        if kept:
            studies.append({**study, "datasets": kept})
            if unlisted:
                notes.append(
                    f"ablation {study['name']} (Table {study['table']}) on {_names(kept)} only: "
                    f"{_names(unlisted)} not listed in `datasets`"
                )
        elif study["datasets"]:
            skipped.append(study)
    if skipped:
        notes.append(
            f"{'ablations' if len(skipped) > 1 else 'ablation'} {_names([s['name'] for s in skipped])} "
            f"({'Tables' if len(skipped) > 1 else 'Table'} {_names([str(s['table']) for s in skipped])}) "
            f"skipped: none of {'their' if len(skipped) > 1 else 'its'} datasets is listed in `datasets`"
        )
    named = list(config["figures"]["gate_frequency"]["datasets"])
    gate = [d for d in named if d in seg]
    unlisted = [d for d in named if d not in listed]
    if named and not gate:
        gate = seg
        if seg:
            notes.append(
                f"figures.gate_frequency on the run's datasets ({_names(seg)}): "
                f"{_names(unlisted)} not listed in `datasets`"
            )
    elif unlisted:
        notes.append(f"figures.gate_frequency without {_names(unlisted)}: not listed in `datasets`")
    return Grid(tuple(seg), tuple(detection), tuple(studies), tuple(gate), tuple(notes))


def run_jobs(config: Mapping[str, Any]) -> list[Job]:
    """Every train / evaluate / detect job of ``config`` (a validated pipeline config)."""
    custom = config.get("custom_datasets") or {}
    det = config["detection"]
    abl = config["ablations"]
    kfold = config["data"]["kfold"]
    prepared = Path(config["data"]["prepared_dir"])
    grid = run_grid(config)
    t = config["training"]
    cells: dict[tuple[str, str, str], tuple] = {}
    # A peft method's cells are built with its options (config peft_methods), every variant of it.
    declared = config.get("peft_methods") or {}
    peft = {n: tuple(peft_method_options(n, e).items()) for n, e in declared.items()}
    for d in grid.segmentation:
        for m in config["main"]["methods"]:
            cells[(d, m, "default")] = peft.get(m, ())
    for study in grid.studies:
        for d in study["datasets"]:
            for v in study["values"]:
                variant, options = variant_name(study, v, abl["method"])
                cells.setdefault((d, abl["method"], variant), options)
            if "baseline" in config["main"]["methods"]:
                cells.setdefault((d, "baseline", "default"), ())
    detection = {(det["dataset"], m, "default"): peft.get(m, ()) for m in grid.detection}
    jobs: list[Job] = []
    for (dataset, method, variant), options in [*cells.items(), *detection.items()]:
        spec = lookup_spec(dataset, custom)
        meta_path = prepared / dataset / "meta.json"
        meta = read_json(meta_path) if meta_path.exists() else None
        is_detection = (dataset, method, variant) in detection
        folder = (
            folder_sizes(dataset, custom[dataset], config["data"]["raw_dir"]) if dataset in custom else None
        )
        for seed in config["seeds"]:
            for unit in ["main"] if is_detection else units(spec, kfold):
                train, test, source = unit_sizes(spec, unit, kfold, meta, folder)
                steps = math.ceil(train / t["batch_size"]) * t["epochs"] if t["epochs"] else int(t["steps"])
                hw = tuple(spec.image_hw or (config["model"]["image_size"],) * 2)
                common = {
                    "dataset": dataset,
                    "method": method,
                    "variant": variant,
                    "seed": int(seed),
                    "unit": unit,
                    "options": tuple(sorted(options)),
                    "num_classes": spec.num_classes,
                    "image_format": spec.image_format,
                    "image_hw": hw,
                    "max_image_hw": tuple(spec.max_image_hw or hw),
                    "size_source": source,
                    "presence_head": spec.presence_head,
                }
                jobs.append(Job("train", items=train, steps=steps, **common))
                jobs.append(Job("detect" if is_detection else "evaluate", items=test, steps=0, **common))
    return jobs


# ----------------------------------------------------------------------------- config
# The pipeline's config schema, relative to the checkout root where Snakemake and `mopeft plan` run.
SCHEMA = Path("workflow/schemas/config.schema.yaml")


def default_schema() -> Path | None:
    """The schema of the checkout being run (the working directory's), else of this package's
    checkout; None when neither exists (an installed package without the workflow)."""
    for path in (SCHEMA, Path(__file__).resolve().parents[2] / SCHEMA):
        if path.is_file():
            return path
    return None


def validate_config(config: dict[str, Any], schema: Path | Mapping[str, Any], where: str = "config") -> None:
    """Check ``config`` against the schema and fill in its defaults, in place.

    Why defaults are written: Snakemake's ``validate`` (which this replaces in the workflow) writes
    them, so they reach results/<run>/config.yaml and :func:`config_digest`; `mopeft plan` must see
    the same config as the DAG or its plan looks made for another config. A schema error names the
    key: ``config key training: Additional properties are not allowed ('lrr' was unexpected)``."""
    import copy

    import jsonschema
    import yaml

    doc = yaml.safe_load(Path(schema).read_text()) if isinstance(schema, str | Path) else schema
    base = jsonschema.validators.validator_for(doc)
    properties = base.VALIDATORS["properties"]

    def set_defaults(validator, props, instance, subschema):  # as jsonschema's FAQ (and Snakemake)
        if isinstance(instance, dict):
            for key, sub in props.items():
                if isinstance(sub, Mapping) and "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, subschema)

    validator = jsonschema.validators.extend(base, {"properties": set_defaults})(doc)
    for _ in range(100):  # each pass fixes every value it can see; defaults can reveal more
        if not _coerce_scalar_strings(config, validator.iter_errors(config)):
            break
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise InputError(f"{where} key {key}: {error.message}")


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _scalar(text: str, types: list[str]) -> Any:
    """``text`` as the first of ``types`` it spells (integer, number, boolean), else None."""
    word = text.strip()
    if "integer" in types and _INTEGER.fullmatch(word):
        return int(word)
    if "number" in types and _NUMBER.fullmatch(word):
        return int(word) if _INTEGER.fullmatch(word) else float(word)
    if "boolean" in types and word.lower() in ("true", "false"):
        return word.lower() == "true"
    return None


def _coerce_scalar_strings(config: dict[str, Any], errors: Iterable[Any]) -> bool:
    """Turn strings into the numbers (or booleans) the schema asks for, in place; True if any.

    Why: Snakemake's ``--config 'training={lr: 0.002}'`` hands nested values over as strings
    ('0.002'), which the schema would refuse. Only a value whose schema type excludes strings and
    that spells a number is changed, so string settings stay strings. Errors inside ``oneOf`` and
    ``anyOf`` branches (``error.context``) are looked at too."""
    changed = False
    pending = list(errors)
    while pending:
        error = pending.pop()
        pending.extend(error.context or ())
        if error.validator != "type" or not isinstance(error.instance, str):
            continue
        wanted = error.validator_value
        types = [wanted] if isinstance(wanted, str) else list(wanted)
        path = list(error.absolute_path)
        if "string" in types or not path or (value := _scalar(error.instance, types)) is None:
            continue
        parent: Any = config
        for key in path[:-1]:
            parent = parent[key]
        if parent[path[-1]] == error.instance:  # not already changed through another branch
            parent[path[-1]] = value
            changed = True
    return changed


def load_config(paths: list[Path], schema: Path | None = None) -> dict[str, Any]:
    """The run config from ``--configfile`` files, later files overriding earlier keys (as
    Snakemake merges them), checked against the pipeline's schema (``schema``, else
    :func:`default_schema`) with its defaults filled in, as the workflow does."""
    import yaml

    docs = []
    for path in paths:
        try:
            docs.append(yaml.safe_load(Path(path).read_text()) or {})
        except FileNotFoundError:
            raise InputError(f"{path}: no such config file") from None
    config = merged(*docs)
    schema = schema if schema is not None and Path(schema).exists() else default_schema()
    if schema is not None:
        validate_config(config, schema, where=", ".join(map(str, paths)) + ": config")
    return config


def merged(*configs: Mapping[str, Any]) -> dict[str, Any]:
    """Configs merged as Snakemake merges ``--configfile`` files: mappings key by key, anything
    else (lists included) replaced by the later file's value. The inputs are not changed."""
    import copy

    config: dict[str, Any] = {}
    for update in configs:
        _merge(config, copy.deepcopy(dict(update)))
    return config


def _merge(base: dict, update: Mapping) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def config_digest(config: Mapping[str, Any]) -> str:
    """What a plan depends on in the config (the model, training, the grid): a plan made for
    another config is stale, and the pipeline then falls back to its defaults."""
    import hashlib
    import json

    keys = ("model", "training", "seeds", "datasets", "custom_datasets", "main", "ablations", "detection")
    parts = {k: config.get(k) for k in keys}
    if config.get("peft_methods"):  # only when set: the digest of a config without them is unchanged
        parts["peft_methods"] = config["peft_methods"]
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_path(config: Mapping[str, Any]) -> Path:
    """Where ``mopeft plan`` writes the run's plan by default and the pipeline looks for it."""
    return Path("results") / str(config["run"]) / "plan.json"
