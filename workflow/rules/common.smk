# Shared helpers (config checks, the cell grid, per-job arguments) for workflow/rules/*.smk.
# Rules stay thin: every path/argument they need is computed by a named function here. Methods,
# datasets and tables are not listed here: they come from the package's registries
# (mopeft.methods.registry, mopeft.data.registry, mopeft.report.registry), which are torch-free.
# Shell quoting: every field of a rule's shell string is written `{...:q}`. The argument helpers
# below return LISTS of words (flag, value, ...), which `:q` quotes one by one, so a config path
# with a space or a `;` reaches the command as one argument and never as shell syntax.

import functools
import os
from pathlib import Path

from mopeft import codedeps
from mopeft.data.registry import DATASETS as REGISTRY
from mopeft.data.registry import get_spec
from mopeft.methods.registry import METHOD_SPECS
from mopeft.report.registry import TABLES
from snakemake.utils import validate

# `--config seeds=[0,1]` arrives as strings; the schema (and the cell paths) want integers.
if isinstance(config.get("seeds"), list):
    config["seeds"] = [int(s) if isinstance(s, str) and s.strip().isdigit() else s for s in config["seeds"]]
validate(config, schema="../schemas/config.schema.yaml")

RUN = config["run"]
RAW = config["data"]["raw_dir"].rstrip("/")
PREP = config["data"]["prepared_dir"].rstrip("/")
KFOLD = config["data"]["kfold"]
SEEDS = config["seeds"]
DATASETS = config["datasets"]
DET = config["detection"]
EFF = config["efficiency"]
# Parameter counts are exact without weights or compute; with `params_arch` (the demo counts the
# study's ViT-B beside tiny-model timings) they are taken at that architecture's own image size
# (no --image-size: `mopeft params` then uses the architecture's default).
PARAMS_ARCH = EFF.get("params_arch", config["model"]["arch"])
PARAMS_SIZE_ARG = [] if "params_arch" in EFF else ["--image-size", EFF["image_size"]]
# Segmentation datasets: everything except the detection dataset (FAIR-1M).
SEG_DATASETS = [d for d in DATASETS if d != DET["dataset"]]
MAIN_METHODS = config["main"]["methods"]
ABL = config["ablations"]
CELLS = "results/{run}/cells/{dataset}/{method}/{variant}/seed{seed}"
# The study's own values (declared inputs of the tables), next to the Snakefile.
PAPER_DIR = "results/paper"
TABLE_BY_WILDCARD = {t.wildcard: t for t in TABLES.values()}


class ConfigError(ValueError):
    pass


def _unknown(key, values, known, what):
    bad = [v for v in values if v not in known]
    if bad:
        raise ConfigError(f"config {key}: unknown {what} {bad}; known: {', '.join(known)}")


def _check_config():
    """Membership checks the schema cannot express, each naming the config key at fault."""
    _unknown("datasets", DATASETS, REGISTRY, "dataset(s)")
    for key, methods in (
        ("main.methods", MAIN_METHODS),
        ("efficiency.methods", EFF["methods"]),
        ("detection.methods", DET["methods"]),
        ("ablations.method", [ABL["method"]]),
    ):
        _unknown(key, methods, METHOD_SPECS, "method(s)")
    _unknown("efficiency.dataset", [EFF["dataset"]], REGISTRY, "dataset")
    if DET["methods"] and DET["dataset"] not in DATASETS:
        raise ConfigError(f"config detection.dataset: {DET['dataset']!r} must be listed in datasets")
    ablation_tables = [k for k, t in TABLES.items() if t.inputs == "ablation"]
    options = METHOD_SPECS[ABL["method"]].defaults
    for i, study in enumerate(ABL["studies"]):
        where = f"ablations.studies[{i}] ({study['name']})"
        _unknown(f"{where}.table", [study["table"]], ablation_tables, "ablation table")
        option = TABLES[study["table"]].option
        if option not in options:
            raise ConfigError(
                f"config {where}: table {study['table']} varies {option!r}, which method "
                f"{ABL['method']} does not have (its options: {', '.join(options)})"
            )
        _unknown(f"{where}.datasets", study["datasets"], SEG_DATASETS, "segmentation dataset(s)")
    _unknown("figures.gate_frequency.datasets", config["figures"]["gate_frequency"]["datasets"], SEG_DATASETS,
             "segmentation dataset(s)")


_check_config()


# ----------------------------------------------------------------------------- variants
def study_option(study):
    """The method option an ablation study varies (its table's) and that option's default (the method's)."""
    option = TABLES[study["table"]].option
    return option, METHOD_SPECS[ABL["method"]].defaults[option]


def variant_name(study, value):
    """Ablation cell name (`r4`, `L25`, `dmid256`); the method's default value is the `default` cell."""
    option, default = study_option(study)
    return "default" if value == default else f"{TABLES[study['table']].variant_label}{value}"


# variant -> (option, value) for `mopeft train --set option=value`
VARIANTS = {
    variant_name(s, v): (study_option(s)[0], v)
    for s in ABL["studies"]
    for v in s["values"]
    if v != study_option(s)[1]
}


def set_args(wildcards):
    """`--set k=v` for an ablation variant, nothing for `default`."""
    if wildcards.variant == "default":
        return []
    option, value = VARIANTS[wildcards.variant]
    return ["--set", f"{option}={value}"]


def _alternatives(values):
    return "|".join(sorted(set(values), key=len, reverse=True)) or "^$"


wildcard_constraints:
    run=RUN,
    dataset=_alternatives(DATASETS),
    method=_alternatives(METHOD_SPECS),
    variant=_alternatives(["default", *VARIANTS]),
    seed=r"\d+",
    unit=r"[A-Za-z0-9_]+",


# ----------------------------------------------------------------------------- units
def is_kfold(dataset):
    """A dataset without a labelled train split is scored by k folds over its test set."""
    return get_spec(dataset).train_split == "none"


@functools.cache
def units(dataset):
    """Training/evaluation units of a dataset, from its registry spec (mopeft.data.units)."""
    spec = get_spec(dataset)
    if spec.tasks:
        return list(spec.tasks)
    if is_kfold(dataset):
        return [f"fold{i}" for i in range(KFOLD)]
    return ["main"]


def kfold_args(wildcards):
    """`--kfold K` only where a unit is a fold: changing data.kfold reruns nothing else."""
    return ["--kfold", KFOLD] if is_kfold(wildcards.dataset) else []


# ----------------------------------------------------------------------------- code inputs
def command_code(command, *modules):
    """The package files `mopeft <command>` runs: the static import closure of its module (and of
    ``modules``, which it imports by name). Declared as inputs, a code change reruns what it affects."""
    return codedeps.files(f"mopeft.commands.{command}", *modules)


def method_code(command):
    """`command`'s code plus the cell's method implementation (editing vpt.py reruns only VPT cells)."""
    return lambda wildcards: command_code(command, METHOD_SPECS[wildcards.method].module)


def dataset_code(command):
    """`command`'s code plus the dataset's own module (its preparer and miniature)."""
    return lambda wildcards: command_code(command, REGISTRY[wildcards.dataset])


def raw_code(wildcards):
    """A miniature is regenerated when its generator changes; a real download never is."""
    if config["data"]["source"] == "miniature":
        return dataset_code("miniature")(wildcards)
    return []


# ----------------------------------------------------------------------------- paths
def cell(dataset, method, variant="default", seed=0):
    return CELLS.format(run=RUN, dataset=dataset, method=method, variant=variant, seed=seed)


def cell_metrics(dataset, method, variant="default"):
    """metrics.json of one (dataset, method, variant) cell for every seed."""
    return [f"{cell(dataset, method, variant, s)}/metrics.json" for s in SEEDS]


def meta(dataset):
    return f"{PREP}/{dataset}/meta.json"


def meta_of(wildcards):
    return meta(wildcards.dataset)


def raw_of(wildcards):
    return f"{RAW}/{wildcards.dataset}"


def data_dir(wildcards, input):
    """The prepared dataset folder of the rule's `data` input (its meta.json)."""
    return os.path.dirname(input.data)


def out_dir(wildcards, output):
    return os.path.dirname(output[0])


def prepared_root(wildcards, output):
    """data/prepared/<dataset>/meta.json -> data/prepared (what `mopeft prepare --out` takes)."""
    return os.path.dirname(os.path.dirname(output[0]))


def out_prefix(wildcards, output):
    """results/<run>/tables/table_4_3.csv -> results/<run>/tables/table_4_3 (the CLI adds suffixes)."""
    return os.path.splitext(output[0])[0]


# ----------------------------------------------------------------------------- grids
def main_cells(methods=None):
    methods = MAIN_METHODS if methods is None else [m for m in methods if m in MAIN_METHODS]
    return [p for d in SEG_DATASETS for m in methods for p in cell_metrics(d, m)]


def ablation_cells(study):
    cells = [
        p
        for d in study["datasets"]
        for v in study["values"]
        for p in cell_metrics(d, ABL["method"], variant_name(study, v))
    ]
    if "baseline" in MAIN_METHODS:  # the tables' rightmost "baseline" column
        cells += [p for d in study["datasets"] for p in cell_metrics(d, "baseline")]
    return cells


def study_for_table(key):
    return next((s for s in ABL["studies"] if s["table"] == key), None)


def ap_files():
    return [f"{cell(DET['dataset'], m, 'default', s)}/ap.json" for m in DET["methods"] for s in SEEDS]


def gate_cells():
    if "mopeft" not in MAIN_METHODS:
        return []
    return [p for d in config["figures"]["gate_frequency"]["datasets"] for p in cell_metrics(d, "mopeft")]


def table_wanted(spec):
    """Does this run configure anything for the table? (Every registered table, if so.)"""
    if spec.inputs == "datasets":
        return bool(SEG_DATASETS)
    if spec.inputs == "cells":
        return bool(main_cells(spec.methods))
    if spec.inputs == "efficiency":
        return bool(EFF["methods"])
    if spec.inputs == "ablation":
        study = study_for_table(spec.key)
        return bool(study and study["datasets"])
    return bool(DET["methods"])


def final_outputs():
    tables = [f"results/{RUN}/tables/{t.stem}.csv" for t in TABLES.values() if table_wanted(t)]
    figures = [f"results/{RUN}/figures/gate_frequency.png"] if gate_cells() else []
    return tables + figures


# ----------------------------------------------------------------------------- train arguments
def weights_input(wildcards):
    weights = config["model"]["weights"]
    return [weights["path"]] if weights else []


def checkpoint_args(wildcards, input):
    """`--checkpoint PATH --checkpoint-sha256 HEX`, or nothing (random initialisation)."""
    weights = config["model"]["weights"]
    if not weights:
        return []
    return ["--checkpoint", input.weights, "--checkpoint-sha256", weights["sha256"]]


def schedule_args(wildcards):
    t = config["training"]
    return ["--epochs", t["epochs"]] if t["epochs"] else ["--steps", t["steps"]]


def speed_args(wildcards):
    """`training.speed` as `mopeft train` flags (how fast, never what)."""
    speed = config["training"].get("speed", {})
    args = [
        "--attention", speed.get("attention", "sdpa"),
        "--encoder-cache", speed.get("encoder_cache", "auto"),
    ]
    if speed.get("workers") is not None:
        args += ["--workers", speed["workers"]]
    if speed.get("compile"):
        args += ["--compile", speed["compile"]]
    return args


def train_args(wildcards):
    """Every training hyper-parameter from the config, as `mopeft train` flags."""
    t = config["training"]
    return [
        "--arch", config["model"]["arch"], "--image-size", config["model"]["image_size"],
        *schedule_args(wildcards), "--batch-size", t["batch_size"], "--lr", t["lr"],
        "--weight-decay", t["weight_decay"], "--ce-weight", t["loss"]["ce"],
        "--dice-weight", t["loss"]["dice"], "--loss-resolution", t["loss"].get("resolution", "full"),
        *speed_args(wildcards),
    ]


def eval_dirs(wildcards):
    """Evaluation folders of every unit of a cell, for `mopeft combine --units`."""
    base = CELLS.format(**wildcards)
    return [f"{base}/units/{u}/eval/metrics.json" for u in units(wildcards.dataset)]


def eval_dir_args(wildcards, input):
    return [os.path.dirname(p) for p in input.units]


def fair1m_model(wildcards):
    return f"{CELLS.format(dataset=DET['dataset'], variant='default', **wildcards)}/units/main/model.pt"


def efficiency_num_classes(wildcards):
    return get_spec(EFF["dataset"]).num_classes


# ----------------------------------------------------------------------------- resources
# Base values for one attempt on the study's ViT-B @ 1024 (a retry gets attempt x base). The
# SLURM profile may override any of them with set-resources; the config holds no runtime settings.
TINY = config["model"]["arch"] == "tiny"
# The tiny demo model is bound by Python start-up, not compute: one thread per job lets
# `--cores 2` run two jobs at once. (On SLURM, cpus_per_task in the profile sets the CPUs.)
GPU_THREADS = 1 if TINY else 8
EVAL_THREADS = 1 if TINY else 4


def train_runtime(wildcards, attempt):
    return (10 if TINY else 12 * 60) * attempt


def train_mem(wildcards, attempt):
    return (2000 if TINY else 48000) * attempt


def eval_runtime(wildcards, attempt):
    return (10 if TINY else 2 * 60) * attempt


def eval_mem(wildcards, attempt):
    return (2000 if TINY else 32000) * attempt


def cpu_runtime(wildcards, attempt):
    return 30 * attempt


def cpu_mem(wildcards, attempt):
    return 4000 * attempt


def prepare_runtime(wildcards, attempt):
    return (10 if config["data"]["source"] == "miniature" else 4 * 60) * attempt


def prepare_mem(wildcards, attempt):
    return (2000 if config["data"]["source"] == "miniature" else 16000) * attempt


def fair1m_annotations(wildcards, input):
    return os.path.join(os.path.dirname(input.data), "test", "annotations")


# ----------------------------------------------------------------------------- tables
def table_spec_of(wildcards):
    return TABLE_BY_WILDCARD[wildcards.name]


def table_inputs(wildcards):
    """Named inputs of `mopeft table <key>`: what the registry says the table is built from, the
    study's CSVs it reads, and its code."""
    spec = table_spec_of(wildcards)
    inputs = {
        "config": f"results/{RUN}/config.yaml",
        "code": command_code("table", spec.module),
        "paper": [f"{PAPER_DIR}/{stem}.csv" for stem in spec.paper],
    }
    if spec.inputs == "datasets":
        inputs["meta"] = [meta(d) for d in SEG_DATASETS]
    elif spec.inputs == "cells":
        inputs["cells"] = main_cells(spec.methods)
        inputs["per_image"] = per_image_files(inputs["cells"])
    elif spec.inputs == "efficiency":
        inputs["params"] = [f"results/{RUN}/efficiency/params/{m}.json" for m in EFF["methods"]]
        inputs["flops"] = [f"results/{RUN}/efficiency/flops/{m}.json" for m in EFF["methods"]]
        inputs["bench"] = f"results/{RUN}/efficiency/bench.json"
    elif spec.inputs == "ablation":
        inputs["cells"] = ablation_cells(study_for_table(spec.key))
        inputs["per_image"] = per_image_files(inputs["cells"])
    else:
        inputs["cells"] = ap_files()  # FAIR-1M: the score-detections AP files
    return inputs


BOOTSTRAP_RESAMPLES = 1000  # test-image resamples behind the tables' 95 % intervals


def per_image_files(cell_metrics_files):
    """Every unit's per_image.npz of the given cells (the bootstrap intervals read them)."""
    out = []
    for path in cell_metrics_files:
        folder = os.path.dirname(path)
        dataset = Path(folder).parts[3]  # results/<run>/cells/<dataset>/<method>/<variant>/seed<k>
        out += [f"{folder}/units/{u}/eval/per_image.npz" for u in units(dataset)]
    return out


def bootstrap_args(wildcards):
    spec = table_spec_of(wildcards)
    return ["--bootstrap", BOOTSTRAP_RESAMPLES] if spec.inputs in ("cells", "ablation") else []


def table_key(wildcards):
    return table_spec_of(wildcards).key


def table_args(wildcards, input):
    """`--cells a b ...`, `--meta ...`, `--params/--flops/--bench` from the named inputs."""
    flags = []
    for key in ("meta", "cells", "params", "flops", "bench"):
        if key in input.keys():
            files = input[key]
            files = [files] if isinstance(files, str) else list(files)
            flags += [f"--{key}", *files]
    return flags


def gate_cell_args(wildcards, input):
    return list(input.cells)


def write_config_snapshot(path, cfg, log):
    """results/<run>/config.yaml for the tables' provenance (atomic)."""
    import yaml
    from mopeft.io import write_text

    write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
    Path(log).write_text(f"wrote {path}\n")
