"""The pipeline's logic, which workflow/rules/*.smk call and the tests call directly.

Why a module and not common.smk: what a config means for the DAG (the membership checks that name
a config key, which tables and cells a run builds, each job's command-line flags, its resources
and its code hash) is plain Python over the config and the registries. Written in a ``.smk`` file
it could only be tested by starting Snakemake (seconds per config); here a test builds a
:class:`Workflow` from a config dict in milliseconds, and common.smk is a thin layer that hands
these methods to the rules. Snakemake's ``wildcards`` reach the methods as objects with attribute
access (a ``types.SimpleNamespace`` in tests).

Standard library and torch-free, like everything the DAG imports at start-up
(tests/test_layers.py).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mopeft import codedeps
from mopeft.data.folder import spec as folder_spec
from mopeft.data.registry import DATASETS as REGISTRY
from mopeft.data.registry import MESS_IMPORTER
from mopeft.data.spec import DatasetSpec
from mopeft.errors import InputError
from mopeft.methods.registry import known_methods, method_spec, peft_method_options, peft_set_args
from mopeft.plan.jobs import config_digest, plan_path, run_grid, validate_config, variant_name
from mopeft.plan.jobs import units as plan_units
from mopeft.report.registry import TABLES, TableSpec


class ConfigError(InputError):
    """A config mistake, told in one line naming the key (and the fix)."""


# Run names whose folders are someone else's: the SLURM profile's `slurm-logdir: logs/slurm` (a run
# `slurm` would write its rule logs, logs/<run>/..., among the plugin's). Checked before the schema
# (which also refuses it) so the message says why.
RESERVED_RUNS = {"slurm": "logs/slurm/ is the SLURM profile's job log folder"}
CELLS = "results/{run}/cells/{dataset}/{method}/{variant}/seed{seed}"
# The study's own values (declared inputs of the tables): a folder of the checkout, outside
# results/ so that `rm -rf results` deletes outputs only.
PAPER_DIR = "paper"
BOOTSTRAP_RESAMPLES = 1000  # test-image resamples behind the tables' 95 % intervals
EXAMPLE_IMAGES = 2  # test images per unit whose predictions `mopeft evaluate` saves for Fig. 4.1
TABLE_BY_WILDCARD: dict[str, TableSpec] = {t.wildcard: t for t in TABLES.values()}

Resource = Callable[..., Any]


def normalise_config(config: dict[str, Any], schema: Path | Mapping[str, Any]) -> None:
    """The config as the rules read it, in place: seeds as integers, the run name checked, the
    schema's checks and defaults (:func:`mopeft.plan.jobs.validate_config`)."""
    # `--config seeds=[0,1]` arrives as strings; the schema (and the cell paths) want integers.
    if isinstance(config.get("seeds"), list):
        config["seeds"] = [
            int(s) if isinstance(s, str) and s.strip().isdigit() else s for s in config["seeds"]
        ]
    run = config.get("run")
    if isinstance(run, str) and run in RESERVED_RUNS:
        raise ConfigError(f"config run: {run!r} is reserved ({RESERVED_RUNS[run]}); choose another run name")
    try:
        validate_config(config, schema)
    except InputError as exc:
        raise ConfigError(str(exc)) from None


def alternatives(values: Any) -> str:
    """A wildcard constraint matching exactly ``values`` (longest first), or nothing at all."""
    return "|".join(sorted(set(values), key=len, reverse=True)) or "^$"


def _names(values: list[str]) -> str:
    return ", ".join(values)


def _attr(wildcards: Any, name: str, default: Any) -> Any:
    return getattr(wildcards, name, default)


class Workflow:
    """One run of the pipeline, from its merged config: checked on construction (a bad config
    raises :class:`ConfigError` naming the key), then asked by the rules for paths, flags,
    resources and code hashes.

    ``schema``: check and complete ``config`` in place first (:func:`normalise_config`); the
    Snakefile passes it, a test of an already valid config may not. ``root``: the checkout the
    run's relative paths (the resource plan, a folder dataset's files) are read from."""

    def __init__(
        self, config: dict[str, Any], schema: Path | Mapping[str, Any] | None = None, root: Path = Path(".")
    ) -> None:
        if schema is not None:
            normalise_config(config, schema)
        self.config = config
        self.root = Path(root)
        self.run = config["run"]
        self.raw = config["data"]["raw_dir"].rstrip("/")
        self.prep = config["data"]["prepared_dir"].rstrip("/")
        self.kfold = config["data"]["kfold"]
        self.seeds = list(config["seeds"])
        self.datasets = list(config["datasets"])
        # Folder datasets (config custom_datasets): declared once in the config, listed in `datasets`
        # like a registry key; a `source` entry's folders are generated by the `scenes` rule.
        self.custom = dict(config.get("custom_datasets") or {})
        self.registered = [d for d in self.datasets if d not in self.custom]
        self.generated = [k for k, e in self.custom.items() if folder_spec.is_generated(e)]
        self.det = config["detection"]
        self.eff = config["efficiency"]
        self.abl = config["ablations"]
        self.main_methods = list(config["main"]["methods"])
        # Methods beyond the study (config peft_methods: HF peft tuners, `peft_<x>`): their options
        # are their whole definition, given to every job of theirs as `--set` (mopeft.methods.registry).
        self.peft = dict(config.get("peft_methods") or {})
        self.peft_options = self._peft_options()
        self.methods = known_methods(self.peft)
        # Parameter counts are exact without weights or compute; with `params_arch` (the demo counts
        # the study's ViT-B beside tiny-model timings) they are taken at that architecture's own image
        # size (no --image-size: `mopeft params` then uses the architecture's default).
        self.params_arch = self.eff.get("params_arch", config["model"]["arch"])
        self.params_size_arg = [] if "params_arch" in self.eff else ["--image-size", self.eff["image_size"]]
        self.check()
        # What the run builds (mopeft.plan.jobs.run_grid, which the resource plan reads too): the
        # sections naming datasets trimmed to `datasets`, so a user config of only custom_datasets +
        # datasets over config/config.yaml runs without FAIR-1M or the MESS ablation datasets.
        self.grid = run_grid(config)
        self.seg_datasets = list(self.grid.segmentation)  # every dataset except detection.dataset
        self.det_methods = list(self.grid.detection)  # none when detection.dataset is not listed
        self.studies = list(self.grid.studies)  # ablation studies on their listed datasets
        self.gate_datasets = list(self.grid.gate_datasets)
        # variant -> (option, value) for `mopeft train --set option=value`
        self.variants: dict[str, tuple[str, Any]] = {
            name: options[0]
            for s in self.studies
            for v in s["values"]
            for name, options in [variant_name(s, v, self.abl["method"])]
            if options
        }
        self._init_resources()

    # ------------------------------------------------------------------------- config checks
    def _unknown(self, key: str, values: list[str], known: list[str], what: str) -> None:
        bad = [v for v in values if v not in known]
        if bad:
            raise ConfigError(f"config {key}: unknown {what} {bad}; known: {', '.join(known)}")

    def _segmentation(self, key: str, values: list[str], known: list[str]) -> None:
        """A list of segmentation datasets: each registered or declared (else "unknown"), and not
        the detection dataset. One not listed in `datasets` is no error: run_grid leaves it out."""
        self._unknown(key, values, known, "dataset(s)")
        if self.det["dataset"] in values:
            raise ConfigError(
                f"config {key}: {self.det['dataset']!r} is detection.dataset, not a segmentation dataset; "
                f"remove it"
            )

    def _check_folder_datasets(self) -> None:
        """Each custom_datasets entry names its files one way, has a colour per class, ...
        (mopeft.data.folder.spec.check_entry), under a key no registered dataset has."""
        for key, entry in self.custom.items():
            if key in REGISTRY:
                raise ConfigError(
                    f"config custom_datasets.{key}: {key!r} is a registered dataset; choose another key"
                )
            try:
                folder_spec.check_entry(key, entry)
            except folder_spec.FolderSpecError as exc:
                raise ConfigError(str(exc)) from None

    def _peft_options(self) -> dict[str, dict[str, Any]]:
        """Each peft_methods entry as method options (checked here, torch-free: the tuner itself is
        checked by peft when a job builds the model)."""
        try:
            return {name: peft_method_options(name, entry) for name, entry in self.peft.items()}
        except InputError as exc:
            raise ConfigError(str(exc)) from None

    def check(self) -> None:
        """Membership checks the schema cannot express, each naming the config key at fault."""
        self._check_folder_datasets()
        known = [*REGISTRY, *self.custom]
        self._unknown("datasets", self.datasets, known, "dataset(s)")
        for key, methods in (
            ("main.methods", self.main_methods),
            ("efficiency.methods", self.eff["methods"]),
            ("detection.methods", self.det["methods"]),
            ("ablations.method", [self.abl["method"]]),
        ):
            self._unknown(key, methods, self.methods, "method(s)")
        # The detection rules do not pass a method's options yet (Table A.1): refuse, not mis-measure.
        if peft := [m for m in self.det["methods"] if m in self.peft]:
            raise ConfigError(
                f"config detection.methods: {peft} are peft_methods, which this pipeline runs in "
                f"main.methods and efficiency.methods only (Tables 4.4, 4.5)"
            )
        self._unknown("efficiency.dataset", [self.eff["dataset"]], known, "dataset")
        self._unknown("detection.dataset", [self.det["dataset"]], known, "dataset")
        ablation_tables = [k for k, t in TABLES.items() if t.inputs == "ablation"]
        options = method_spec(self.abl["method"]).defaults
        for i, study in enumerate(self.abl["studies"]):
            where = f"ablations.studies[{i}] ({study['name']})"
            self._unknown(f"{where}.table", [study["table"]], ablation_tables, "ablation table")
            option = TABLES[study["table"]].option
            if option not in options:
                raise ConfigError(
                    f"config {where}: table {study['table']} varies {option!r}, which method "
                    f"{self.abl['method']} does not have (its options: {', '.join(options)})"
                )
            self._segmentation(f"{where}.datasets", study["datasets"], known)
        figure = self.config["figures"]["gate_frequency"]["datasets"]
        self._segmentation("figures.gate_frequency.datasets", figure, known)

    # ------------------------------------------------------------------------- wildcards
    def wildcard_constraints(self) -> dict[str, str]:
        """Every wildcard matches only what this run names (a typo is no job, not a wrong one)."""
        return {
            "run": self.run,
            "dataset": alternatives(self.datasets),
            "method": alternatives(self.methods),
            "variant": alternatives(["default", *self.variants]),
            "seed": r"\d+",
            "unit": r"[A-Za-z0-9_]+",
        }

    def variant(self, study: Mapping[str, Any], value: Any) -> str:
        """Ablation cell name (`r4`, `L25`, `dmid256`); the method's default value is the `default`
        cell (mopeft.plan.jobs.variant_name: the resource plan names the cells the same way)."""
        return variant_name(study, value, self.abl["method"])[0]

    def set_args(self, wildcards: Any) -> list[Any]:
        """`--set k=v` for an ablation variant (nothing for `default`), after a peft method's options."""
        words = self.method_args(wildcards)
        if wildcards.variant == "default":
            return words
        option, value = self.variants[wildcards.variant]
        return [*words, "--set", f"{option}={value}"]

    def method_args(self, wildcards: Any) -> list[str]:
        """`--set k=v` words of the method's own options: a peft method's tuner, targets and peft
        options (a changed tuner config is a params change: its cells rerun); nothing for the
        registry's methods."""
        options = self.peft_options.get(_attr(wildcards, "method", ""))
        return peft_set_args(options) if options else []

    def bench_args(self, wildcards: Any) -> list[str]:
        """`mopeft bench --set METHOD:k=v` words: the options of the peft methods among
        efficiency.methods (one job times them all, so each option names its method)."""
        return [
            word for m in self.eff["methods"] if m in self.peft_options
            for word in peft_set_args(self.peft_options[m], m)
        ]  # fmt: skip

    def table_methods(self, spec: TableSpec) -> tuple[str, ...]:
        """A main table's method columns: the registry's, then (where the table takes methods beyond
        the study, Table 4.4) the run's peft methods listed in main.methods, in that order."""
        if not spec.beyond:
            return spec.methods
        return (*spec.methods, *[m for m in self.main_methods if m in self.peft])

    # ------------------------------------------------------------------------- datasets and units
    @functools.cache  # noqa: B019 - one Workflow per DAG; the cache lives as long as it does
    def dataset_spec(self, dataset: str) -> DatasetSpec:
        """What a dataset is (classes, train split, tasks): the registry's spec, or a folder
        dataset's from its config entry. Every helper that asks looks here, so both kinds plan alike."""
        return folder_spec.lookup_spec(dataset, self.custom)

    def is_kfold(self, dataset: str) -> bool:
        """A dataset without a labelled train split is scored by k folds over its test set."""
        return self.dataset_spec(dataset).train_split == "none"

    @functools.cache  # noqa: B019 - as dataset_spec
    def units(self, dataset: str) -> list[str]:
        """Training/evaluation units of a dataset, from its spec (mopeft.plan.jobs.units)."""
        return plan_units(self.dataset_spec(dataset), self.kfold)

    def kfold_args(self, wildcards: Any) -> list[Any]:
        """`--kfold K` only where a unit is a fold: changing data.kfold reruns nothing else."""
        return ["--kfold", self.kfold] if self.is_kfold(wildcards.dataset) else []

    # ------------------------------------------------------------------------- code hashes
    def code(self, command: str, *modules: str, methods: tuple[str, ...] = ()) -> str:
        """The code hash of `mopeft <command>` (mopeft.codedeps: what counts is decided there),
        with ``modules`` it imports by name and the implementation modules of ``methods``."""
        return codedeps.command_digest(command, *modules, methods=[method_spec(m).module for m in methods])

    def method_code(self, command: str) -> Callable[[Any], str]:
        """`command`'s hash with the cell's method (editing LoRA reruns the cells that use it)."""
        return lambda wildcards: self.code(command, methods=(wildcards.method,))

    def dataset_code(self, command: str) -> Callable[[Any], str]:
        """`command`'s hash with the dataset's own module (its preparer and miniature)."""
        return lambda wildcards: self.code(command, REGISTRY[wildcards.dataset])

    def prepare_code(self, wildcards: Any) -> str:
        """`mopeft prepare`'s hash with the dataset's module, and the MESS import when it is used."""
        extra = [MESS_IMPORTER] if self.mess_args(wildcards) else []
        return self.code("prepare", REGISTRY[wildcards.dataset], *extra)

    def folder_code(self, wildcards: Any) -> str:
        """`mopeft prepare --spec`'s hash: the command and the folder preparer it imports by name."""
        return self.code("prepare", folder_spec.PREPARER)

    def raw_code(self, wildcards: Any) -> str:
        """A miniature is regenerated when its generator changes; a real download never is."""
        if self.config["data"]["source"] == "miniature":
            return self.dataset_code("miniature")(wildcards)
        return ""

    def bench_code(self, wildcards: Any) -> str:
        """`mopeft bench` runs every efficiency method in one job."""
        return self.code("bench", methods=tuple(self.eff["methods"]))

    def table_code(self, wildcards: Any) -> str:
        """`mopeft table`'s hash with the table's builder module."""
        return self.code("table", self.table_spec_of(wildcards).module)

    # ------------------------------------------------------------------------- paths
    def cell(self, dataset: str, method: str, variant: str = "default", seed: int = 0) -> str:
        return CELLS.format(run=self.run, dataset=dataset, method=method, variant=variant, seed=seed)

    def cell_metrics(self, dataset: str, method: str, variant: str = "default") -> list[str]:
        """metrics.json of one (dataset, method, variant) cell for every seed."""
        return [f"{self.cell(dataset, method, variant, s)}/metrics.json" for s in self.seeds]

    def meta(self, dataset: str) -> str:
        return f"{self.prep}/{dataset}/meta.json"

    def meta_of(self, wildcards: Any) -> str:
        return self.meta(wildcards.dataset)

    def raw_of(self, wildcards: Any) -> str:
        return f"{self.raw}/{wildcards.dataset}"

    # ------------------------------------------------------------------------- grids
    def main_cells(self, methods: tuple[str, ...] | None = None) -> list[str]:
        """metrics.json of the main cells (of ``methods`` among the main methods)."""
        chosen = self.main_methods if methods is None else [m for m in methods if m in self.main_methods]
        return [p for d in self.seg_datasets for m in chosen for p in self.cell_metrics(d, m)]

    def ablation_cells(self, study: Mapping[str, Any]) -> list[str]:
        cells = [
            p
            for d in study["datasets"]
            for v in study["values"]
            for p in self.cell_metrics(d, self.abl["method"], self.variant(study, v))
        ]
        if "baseline" in self.main_methods:  # the tables' rightmost "baseline" column
            cells += [p for d in study["datasets"] for p in self.cell_metrics(d, "baseline")]
        return cells

    def study_for_table(self, key: str) -> Mapping[str, Any] | None:
        """The table's ablation study as the run builds it (its listed datasets), or None."""
        return next((s for s in self.studies if s["table"] == key), None)

    def ap_files(self) -> list[str]:
        det = self.det["dataset"]
        return [f"{self.cell(det, m, 'default', s)}/ap.json" for m in self.det_methods for s in self.seeds]

    def gate_cells(self) -> list[str]:
        if "mopeft" not in self.main_methods:
            return []
        return [p for d in self.gate_datasets for p in self.cell_metrics(d, "mopeft")]

    def example_cells(self) -> list[str]:
        """Fig. 4.1: the main cells of the first seed (one prediction per method and image)."""
        return [
            f"{self.cell(d, m, 'default', self.seeds[0])}/metrics.json"
            for d in self.seg_datasets
            for m in self.main_methods
        ]

    def _cell_units(self, cell_metrics_files: list[str], name: str) -> list[str]:
        out = []
        for path in cell_metrics_files:
            folder = os.path.dirname(path)
            dataset = Path(folder).parts[3]  # results/<run>/cells/<dataset>/<method>/<variant>/seed<k>
            out += [f"{folder}/units/{u}/{name}" for u in self.units(dataset)]
        return out

    def per_image_files(self, cell_metrics_files: list[str]) -> list[str]:
        """Every unit's per_image.npz of the given cells (the bootstrap intervals read them)."""
        return self._cell_units(cell_metrics_files, "eval/per_image.npz")

    def unit_files(self, cell_metrics_files: list[str], name: str) -> list[str]:
        """``units/<unit>/<name>`` of every unit of the given cells (train_log.json, eval/examples)."""
        return self._cell_units(cell_metrics_files, name)

    def eval_dirs(self, wildcards: Any) -> list[str]:
        """Evaluation metrics of every unit of a cell, for `mopeft combine --units`."""
        base = CELLS.format(
            run=wildcards.run,
            dataset=wildcards.dataset,
            method=wildcards.method,
            variant=wildcards.variant,
            seed=wildcards.seed,
        )
        return [f"{base}/units/{u}/eval/metrics.json" for u in self.units(wildcards.dataset)]

    def fair1m_model(self, wildcards: Any) -> str:
        cell = CELLS.format(
            run=wildcards.run, dataset=self.det["dataset"], method=wildcards.method, variant="default",
            seed=wildcards.seed,
        )  # fmt: skip
        return f"{cell}/units/main/model.safetensors"

    def efficiency_num_classes(self, wildcards: Any) -> int:
        return self.dataset_spec(self.eff["dataset"]).num_classes

    # ------------------------------------------------------------------------- tables and outputs
    def table_wanted(self, spec: TableSpec) -> bool:
        """Does this run configure anything for the table? (Every registered table, if so.)"""
        if spec.inputs == "datasets":
            return bool(self.seg_datasets)
        if spec.inputs == "cells":
            return bool(self.main_cells(self.table_methods(spec)))
        if spec.inputs == "efficiency":
            return bool(self.eff["methods"])
        if spec.inputs == "ablation":
            study = self.study_for_table(spec.key)
            return bool(study and study["datasets"])
        return bool(self.det_methods)

    def not_buildable(self, spec: TableSpec) -> str:
        """Why a table the run does not build was asked for by name (a target): it has no inputs.
        The `all` target never asks for it (:meth:`table_wanted`)."""
        where = f"results/{self.run}/tables/{spec.stem}.csv"
        if spec.inputs == "ablation":
            i, study = next(
                ((i, s) for i, s in enumerate(self.abl["studies"]) if s["table"] == spec.key), (0, None)
            )
            if study is None:
                return f"{where}: no ablations.studies entry has table {spec.key!r}; add one"
            key = f"config ablations.studies[{i}] ({study['name']}).datasets"
            if not study["datasets"]:
                return f"{key} is empty, so {where} has no cells"
            return (
                f"{key}: {_names(study['datasets'])} not listed in `datasets`, so {where} has no cells; "
                f"list one in `datasets`"
            )
        if spec.inputs == "detection":
            if not self.det["methods"]:
                return f"config detection.methods is empty: {where} has no cells"
            return (
                f"config detection.dataset: {self.det['dataset']!r} is not listed in `datasets`, so {where} "
                f"has no cells; list it in `datasets`"
            )
        return f"{where}: this run configures nothing for table {spec.key} (config main/efficiency methods)"

    def final_outputs(self) -> list[str]:
        """What `rule all` asks for: every table and figure the run has inputs for."""
        tables = [f"results/{self.run}/tables/{t.stem}.csv" for t in TABLES.values() if self.table_wanted(t)]
        figures = [f"results/{self.run}/figures/gate_frequency.png"] if self.gate_cells() else []
        if self.main_cells():
            figures += [
                f"results/{self.run}/figures/examples.png",
                f"results/{self.run}/figures/training_curves.png",
            ]
        return tables + figures

    def table_spec_of(self, wildcards: Any) -> TableSpec:
        return TABLE_BY_WILDCARD[wildcards.name]

    def table_inputs(self, wildcards: Any) -> dict[str, Any]:
        """Named inputs of `mopeft table <key>`: what the registry says the table is built from
        and the study's CSVs it reads (its code is the ``code`` param, :meth:`table_code`)."""
        spec = self.table_spec_of(wildcards)
        if not self.table_wanted(spec):
            raise ConfigError(self.not_buildable(spec))
        inputs: dict[str, Any] = {
            "config": f"results/{self.run}/config.yaml",
            "paper": [f"{PAPER_DIR}/{stem}.csv" for stem in spec.paper],
        }
        if spec.inputs == "datasets":
            inputs["meta"] = [self.meta(d) for d in self.seg_datasets]
        elif spec.inputs == "cells":
            inputs["cells"] = self.main_cells(self.table_methods(spec))
            inputs["per_image"] = self.per_image_files(inputs["cells"])
            inputs["train_logs"] = self.unit_files(inputs["cells"], "train_log.json")
        elif spec.inputs == "efficiency":
            eff = f"results/{self.run}/efficiency"
            inputs["params"] = [f"{eff}/params/{m}.json" for m in self.eff["methods"]]
            inputs["flops"] = [f"{eff}/flops/{m}.json" for m in self.eff["methods"]]
            inputs["bench"] = f"{eff}/bench.json"
        elif spec.inputs == "ablation":
            study = self.study_for_table(spec.key)
            assert study is not None  # table_wanted
            inputs["cells"] = self.ablation_cells(study)
            inputs["per_image"] = self.per_image_files(inputs["cells"])
        else:
            inputs["cells"] = self.ap_files()  # FAIR-1M: the score-detections AP files
        return inputs

    def table_key(self, wildcards: Any) -> str:
        return self.table_spec_of(wildcards).key

    def bootstrap_args(self, wildcards: Any) -> list[Any]:
        inputs = self.table_spec_of(wildcards).inputs
        return ["--bootstrap", BOOTSTRAP_RESAMPLES] if inputs in ("cells", "ablation") else []

    def loss_args(self, wildcards: Any) -> list[str]:
        """Tables 4.3/4.4 name the runs whose training loss did not fall (from their train logs)."""
        return ["--losses"] if self.table_spec_of(wildcards).inputs == "cells" else []

    # ------------------------------------------------------------------------- train arguments
    def weights_input(self, wildcards: Any) -> list[str]:
        weights = self.config["model"]["weights"]
        return [weights["path"]] if weights else []

    def checkpoint_args(self, wildcards: Any, input: Any) -> list[Any]:
        """`--checkpoint PATH --checkpoint-sha256 HEX`, or nothing (random initialisation)."""
        weights = self.config["model"]["weights"]
        if not weights:
            return []
        return ["--checkpoint", input.weights, "--checkpoint-sha256", weights["sha256"]]

    def schedule_args(self) -> list[Any]:
        t = self.config["training"]
        return ["--epochs", t["epochs"]] if t["epochs"] else ["--steps", t["steps"]]

    def speed_args(self) -> list[Any]:
        """`training.speed` as `mopeft train` flags (how fast, never what)."""
        speed = self.config["training"].get("speed") or {}
        args = [
            "--attention", speed.get("attention", "sdpa"),
            "--encoder-cache", speed.get("encoder_cache", "auto"),
        ]  # fmt: skip
        # Loader workers and the cache budget are resources (train_workers, cache_host_mb): a new plan
        # changes them without making every cell's params, and so the cell, out of date.
        if speed.get("compile"):
            args += ["--compile", speed["compile"]]
        return args

    def train_args(self, wildcards: Any) -> list[Any]:
        """Every training hyper-parameter from the config, as `mopeft train` flags."""
        t = self.config["training"]
        model = self.config["model"]
        return [
            "--arch", model["arch"], "--image-size", model["image_size"],
            *self.schedule_args(), "--batch-size", t["batch_size"], "--lr", t["lr"],
            "--weight-decay", t["weight_decay"], "--ce-weight", t["loss"]["ce"],
            "--dice-weight", t["loss"]["dice"], "--loss-resolution", t["loss"].get("resolution", "full"),
            *self.speed_args(), *(["--tensorboard"] if (t.get("log") or {}).get("tensorboard") else []),
        ]  # fmt: skip

    def examples_args(self, wildcards: Any) -> list[Any]:
        return ["--examples", EXAMPLE_IMAGES]

    # ------------------------------------------------------------------------- folder datasets
    def folder_spec_file(self, wildcards: Any) -> str:
        """data/prepared/<key>.folder.json: the resolved entry `mopeft prepare --spec` reads."""
        return f"{self.prep}/{wildcards.dataset}.folder.json"

    def resolved_folder(self, wildcards: Any) -> dict[str, Any]:
        """The checked entry with defaults and folders filled in (the custom_spec rule's content; a
        change to it is a params change, which rewrites the file and re-prepares the dataset)."""
        return folder_spec.resolve(wildcards.dataset, self.custom[wildcards.dataset], self.raw)

    def folder_sources(self, wildcards: Any) -> list[str]:
        """What a folder dataset is prepared from: the folder its `scenes` job generates, or every
        file of the user's folders (so adding, removing or editing a mask re-prepares it)."""
        if wildcards.dataset in self.generated:
            return [str(folder_spec.generated_dir(wildcards.dataset, self.raw))]
        files = []
        for pair in self.resolved_folder(wildcards)["folders"].values():
            for folder in pair.values():
                path = self.root / folder
                if not path.is_dir():
                    files.append(folder)  # missing: Snakemake names it
                    continue
                files += sorted(
                    str(Path(folder) / f.name)
                    for f in path.iterdir()
                    if f.is_file() and not f.name.startswith(".")
                )
        return files

    def scene_source(self, wildcards: Any) -> dict[str, Any]:
        """`source` of a generated folder dataset ({generate: scenes, count, seed})."""
        return self.custom[wildcards.dataset]["source"]

    def scene_count(self, wildcards: Any) -> int:
        return self.scene_source(wildcards)["count"]

    def scene_seed(self, wildcards: Any) -> int:
        return self.scene_source(wildcards).get("seed", 0)

    # ------------------------------------------------------------------------- resources
    # GPU jobs (train, evaluate, detect) take their memory, time, CPUs, loader workers and embedding-
    # cache budget from the run's resource plan, `results/<run>/plan.json` (`mopeft plan`: modeled per
    # job, with its margins), when it exists and was made for this config; otherwise (the demo has
    # none) from the base values below. Either way a retry gets attempt x the value. The SLURM profile
    # may still override any of them with set-resources; the config holds no runtime settings.
    def _init_resources(self) -> None:
        tiny = self.config["model"]["arch"] == "tiny"
        # The tiny demo model is bound by Python start-up, not compute: one thread per job lets
        # `--cores 2` run two jobs at once.
        self.gpu_threads = 1 if tiny else 8
        self.eval_threads = 1 if tiny else 4
        # Site mapping (profile site block, `config: ["gpu_constraints={40: gpu40g, 80: gpu80g}"]`): a
        # GPU job gets the SLURM constraint of the smallest listed GPU memory (GB) holding its need.
        constraints = self.config.get("gpu_constraints") or {}
        self.gpu_constraints = {int(k): str(v) for k, v in constraints.items()}
        self.plan, self.plan_note = self._load_plan()
        self.speed = self.config["training"].get("speed") or {}
        workers = self.speed.get("workers")
        self.default_workers = workers if workers is not None else (0 if tiny else 4)
        self.train_runtime = self._from_plan("train", "runtime_min", 10 if tiny else 12 * 60)
        self.train_mem = self._from_plan("train", "mem_mb", 2000 if tiny else 48000)
        self.train_cpus = self._flat("train", "cpus", self.gpu_threads)
        self.train_gpu_mem = self._flat("train", "gpu_mem_mb", 0)
        self.eval_runtime = self._from_plan("evaluate", "runtime_min", 10 if tiny else 2 * 60)
        self.eval_mem = self._from_plan("evaluate", "mem_mb", 2000 if tiny else 32000)
        self.eval_cpus = self._flat("evaluate", "cpus", self.eval_threads)
        self.eval_gpu_mem = self._flat("evaluate", "gpu_mem_mb", 0)
        self.detect_runtime = self._from_plan("detect", "runtime_min", 10 if tiny else 2 * 60)
        self.detect_mem = self._from_plan("detect", "mem_mb", 2000 if tiny else 32000)
        self.detect_cpus = self._flat("detect", "cpus", self.eval_threads)
        self.detect_gpu_mem = self._flat("detect", "gpu_mem_mb", 0)
        miniature = self.config["data"]["source"] == "miniature"
        self._prepare_minutes, self._prepare_mb = (10, 2000) if miniature else (4 * 60, 16000)

    def _load_plan(self) -> tuple[dict[str, Any], str]:
        """(the plan's jobs, the line the workflow prints about it); no jobs without a plan made
        for this config."""
        path = self.root / plan_path(self.config)
        if not path.exists():
            return {}, ""
        doc = json.loads(path.read_text())
        if doc.get("config_digest") != config_digest(self.config):
            return {}, (
                f"{plan_path(self.config)} was made for another config: GPU jobs get the default "
                f"resources (rerun `mopeft plan` to update it)"
            )
        return doc["jobs"], f"resources of GPU jobs from {plan_path(self.config)} ({doc['gpu']['label']})"

    def planned(self, rule: str, wildcards: Any) -> dict[str, Any] | None:
        """The plan's record of this job, or None."""
        if not self.plan:
            return None
        dataset = _attr(wildcards, "dataset", self.det["dataset"])
        variant = _attr(wildcards, "variant", "default")
        unit = _attr(wildcards, "unit", "main")
        return self.plan.get(f"{rule}/{dataset}/{wildcards.method}/{variant}/seed{wildcards.seed}/{unit}")

    def _from_plan(self, rule: str, field: str, default: int) -> Resource:
        """A resource function: the plan's value (else ``default``), times the attempt."""

        def resource(wildcards: Any, attempt: int) -> int:
            record = self.planned(rule, wildcards)
            return (record[field] if record else default) * attempt

        return resource

    def _flat(self, rule: str, field: str, default: int) -> Resource:
        """A resource the attempt does not scale (CPUs, workers, the GPU need)."""

        def resource(wildcards: Any) -> int:
            record = self.planned(rule, wildcards)
            return record[field] if record else default

        return resource

    def gpu_constraint(self, rule: str) -> dict[str, Resource]:
        """``{"constraint": ...}`` for a GPU rule when the site maps GPU memory to constraints, else
        nothing (an empty constraint would still reach sbatch as ``-C ''``)."""
        if not self.gpu_constraints:
            return {}

        def resource(wildcards: Any) -> str:
            record = self.planned(rule, wildcards)
            need_gb = record["gpu_need_bytes"] / 1e9 if record else max(self.gpu_constraints)
            fitting = [gb for gb in sorted(self.gpu_constraints) if gb >= need_gb]
            return self.gpu_constraints[fitting[0] if fitting else max(self.gpu_constraints)]

        return {"constraint": resource}

    def train_workers(self, wildcards: Any) -> int:
        """Loader workers: the config's if it sets them, else the plan's (capped by its CPUs)."""
        if self.speed.get("workers") is not None:
            return self.speed["workers"]
        record = self.planned("train", wildcards)
        return record["workers"] if record else self.default_workers

    def eval_workers(self, wildcards: Any) -> int:
        record = self.planned("evaluate", wildcards)
        return record["workers"] if record else self.default_workers

    def cache_host_mb(self, wildcards: Any, attempt: int) -> int:
        """The embedding cache's host budget: the plan's (already inside its mem_mb), else half the
        job's memory request."""
        record = self.planned("train", wildcards)
        if record:
            return record["cache_host_mb"] * attempt
        return self.train_mem(wildcards, attempt) // 2

    def cpu_runtime(self, wildcards: Any, attempt: int) -> int:
        return 30 * attempt

    def cpu_mem(self, wildcards: Any, attempt: int) -> int:
        return 4000 * attempt

    # The datasets whose test images `data.test_images: mess` changes (the others ignore it, so the
    # flag is passed only to these: switching it re-prepares nothing else).
    MESS_REENCODED = frozenset({"chase_db1", "atlantis", "foodseg103"})

    def test_images(self, wildcards: Any) -> str:
        """`mopeft prepare --test-images`: the config's mode for the datasets it changes, else bytes."""
        mode = self.config["data"].get("test_images", "bytes")
        return mode if wildcards.dataset in self.MESS_REENCODED else "bytes"

    def mess_args(self, wildcards: Any) -> list[str]:
        """`--from-mess ROOT` when config `data.mess_root` is set: the test split of every MESS
        dataset (all registered ones but the detection dataset) comes from that prepared MESS tree."""
        root = self.config["data"].get("mess_root")
        if not root or wildcards.dataset == self.det["dataset"]:
            return []
        return ["--from-mess", str(root)]

    def prepare_runtime(self, wildcards: Any, attempt: int) -> int:
        return self._prepare_minutes * attempt

    def prepare_mem(self, wildcards: Any, attempt: int) -> int:
        return self._prepare_mb * attempt


# ----------------------------------------------------------------------------- params from inputs
# Functions of a job's own inputs/outputs (no run state), which Snakemake calls with them.
def data_dir(wildcards: Any, input: Any) -> str:
    """The prepared dataset folder of the rule's `data` input (its meta.json)."""
    return os.path.dirname(input.data)


def out_dir(wildcards: Any, output: Any) -> str:
    return os.path.dirname(output[0])


def prepared_root(wildcards: Any, output: Any) -> str:
    """data/prepared/<dataset>/meta.json -> data/prepared (what `mopeft prepare --out` takes)."""
    return os.path.dirname(os.path.dirname(output[0]))


def out_prefix(wildcards: Any, output: Any) -> str:
    """results/<run>/tables/table_4_3.csv -> results/<run>/tables/table_4_3 (the CLI adds suffixes)."""
    return os.path.splitext(output[0])[0]


def eval_dir_args(wildcards: Any, input: Any) -> list[str]:
    return [os.path.dirname(p) for p in input.units]


def fair1m_annotations(wildcards: Any, input: Any) -> str:
    return os.path.join(os.path.dirname(input.data), "test", "annotations")


def table_args(wildcards: Any, input: Any) -> list[str]:
    """`--cells a b ...`, `--meta ...`, `--params/--flops/--bench` from the named inputs."""
    flags: list[str] = []
    for key in ("meta", "cells", "params", "flops", "bench"):
        if key in input.keys():  # noqa: SIM118 - Snakemake's named input list: `in` tests its values
            files = input[key]
            files = [files] if isinstance(files, str) else list(files)
            flags += [f"--{key}", *files]
    return flags


def cell_args(wildcards: Any, input: Any) -> list[str]:
    return list(input.cells)


def figure_meta_args(wildcards: Any, input: Any) -> list[str]:
    return ["--data", *input.data]


def figure_cell_args(wildcards: Any, input: Any) -> list[str]:
    return ["--cells", *input.cells]


# ----------------------------------------------------------------------------- run: blocks
def write_config_snapshot(path: str, cfg: Mapping[str, Any], log: str) -> None:
    """results/<run>/config.yaml for the tables' provenance (atomic)."""
    import yaml

    from mopeft.io import write_text

    write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
    Path(log).write_text(f"wrote {path}\n")


def write_folder_spec(path: str, resolved: Mapping[str, Any], log: str) -> None:
    """data/prepared/<key>.folder.json (atomic)."""
    from mopeft.io import write_json

    write_json(path, dict(resolved))
    Path(log).write_text(f"wrote {path}\n")
