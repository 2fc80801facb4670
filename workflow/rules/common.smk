# Shared helpers (config validation, the cell grid, per-job arguments) for workflow/rules/*.smk.
# Rules stay thin: every path/argument they need is computed by a named function here.

import functools
import glob
import os
from pathlib import Path

import mopeft
from mopeft.data.registry import DATASETS as REGISTRY
from mopeft.data.registry import get_spec
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
PARAMS_SIZE_ARG = "" if "params_arch" in EFF else f"--image-size {EFF['image_size']}"
# Segmentation datasets: everything except the detection dataset (FAIR-1M).
SEG_DATASETS = [d for d in DATASETS if d != DET["dataset"]]
MAIN_METHODS = config["main"]["methods"]
ABL = config["ablations"]
CELLS = "results/{run}/cells/{dataset}/{method}/{variant}/seed{seed}"
# The installed package's own source folder (absolute, so `--directory` elsewhere still finds it).
PKG = Path(mopeft.__file__).resolve().parent

# Thesis table -> methods shown (Table 4.3: baseline vs decoder FT vs MoPEFT; 4.4: the single PEFTs
# vs MoPEFT): exactly the columns mopeft.report.main_tables reads (TABLE_4_3, TABLE_4_4; not
# imported here to keep pandas out of the DAG's start-up), so a table waits only for its own cells.
TABLE_METHODS = {
    "4.3": ["baseline", "decoder_ft", "mopeft"],
    "4.4": ["lora", "vpt_deep", "vpt", "adapter", "mopeft"],
}


class ConfigError(ValueError):
    pass


def _check_config():
    unknown = [d for d in DATASETS if d not in REGISTRY]
    if unknown:
        raise ConfigError(f"datasets {unknown} are not in mopeft.data.registry.DATASETS")
    if DET["methods"] and DET["dataset"] not in DATASETS:
        raise ConfigError(f"detection.dataset {DET['dataset']!r} must be listed in datasets")
    for study in ABL["studies"]:
        missing = [d for d in study["datasets"] if d not in SEG_DATASETS]
        if missing:
            raise ConfigError(f"ablation {study['name']}: datasets {missing} are not segmentation datasets")
        if study["default"] not in study["values"]:
            raise ConfigError(f"ablation {study['name']}: default {study['default']} must be one of its values")
    missing = [d for d in config["figures"]["gate_frequency"]["datasets"] if d not in SEG_DATASETS]
    if missing:
        raise ConfigError(f"figures.gate_frequency: datasets {missing} are not segmentation datasets")


_check_config()


# ----------------------------------------------------------------------------- variants
def variant_name(study, value):
    """Ablation cell name (`r4`, `L25`, `dmid256`); the default value is the `default` cell."""
    return "default" if value == study["default"] else f"{study['label']}{value}"


# variant -> (option, value) for `mopeft train --set option=value`
VARIANTS = {
    variant_name(s, v): (s["option"], v)
    for s in ABL["studies"]
    for v in s["values"]
    if v != s["default"]
}


def set_args(wildcards):
    """`--set k=v` for an ablation variant, nothing for `default`."""
    if wildcards.variant == "default":
        return ""
    option, value = VARIANTS[wildcards.variant]
    return f"--set {option}={value}"


def _alternatives(values):
    return "|".join(sorted(set(values), key=len, reverse=True)) or "^$"


wildcard_constraints:
    run=RUN,
    dataset=_alternatives(DATASETS),
    method="baseline|decoder_ft|full_ft|lora|vpt_deep|vpt|adapter|mopeft",
    variant=_alternatives(["default", *VARIANTS]),
    seed=r"\d+",
    unit=r"[A-Za-z0-9_]+",


# ----------------------------------------------------------------------------- units
@functools.cache
def units(dataset):
    """Training/evaluation units of a dataset, from its registry spec (mopeft.data.units)."""
    spec = get_spec(dataset)
    if spec.tasks:
        return list(spec.tasks)
    if spec.train_split == "none":
        return [f"fold{i}" for i in range(KFOLD)]
    return ["main"]


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


def code(*parts):
    """Source files of the mopeft package that a rule's outputs depend on.

    Snakemake does not track imported code; declaring these files as inputs makes a change to
    e.g. mopeft/model rerun training (and everything downstream) but not data preparation.
    """
    files = []
    for part in parts:
        path = PKG / part
        if path.suffix == ".py":
            files += [str(path)] if path.exists() else []
        else:
            files.extend(sorted(glob.glob(str(path / "**" / "*.py"), recursive=True)))
    return files


def dataset_code(wildcards):
    """The dataset's own preparer + shared helpers (not the registry: adding a dataset reruns nothing)."""
    own = PKG / "data" / "datasets" / f"{wildcards.dataset}.py"
    shared = sorted(glob.glob(str(PKG / "data" / "datasets" / "_*.py")))
    return [str(own), *shared] if own.exists() else shared


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


def study_for_table(name):
    return next((s for s in ABL["studies"] if s["table"] == name), None)


def ap_files():
    return [
        f"{cell(DET['dataset'], m, 'default', s)}/ap.json" for m in DET["methods"] for s in SEEDS
    ]


def gate_cells():
    if "mopeft" not in MAIN_METHODS:
        return []
    return [p for d in config["figures"]["gate_frequency"]["datasets"] for p in cell_metrics(d, "mopeft")]


def table_names():
    names = ["4_1", "4_2"]
    names += [t.replace(".", "_") for t in TABLE_METHODS if main_cells(TABLE_METHODS[t])]
    if EFF["methods"]:
        names.append("4_5")
    names += [s["table"].replace(".", "_") for s in ABL["studies"] if s["datasets"]]
    if DET["methods"]:
        names.append("a1")
    return names


def final_outputs():
    tables = [f"results/{RUN}/tables/table_{n}.csv" for n in table_names()]
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
        return ""
    return f"--checkpoint {input.weights} --checkpoint-sha256 {weights['sha256']}"


def schedule_args(wildcards):
    t = config["training"]
    return f"--epochs {t['epochs']}" if t["epochs"] else f"--steps {t['steps']}"


def speed_args(wildcards):
    """`training.speed` as `mopeft train` flags (how fast, never what)."""
    speed = config["training"].get("speed", {})
    args = [f"--attention {speed.get('attention', 'sdpa')}", f"--encoder-cache {speed.get('encoder_cache', 'auto')}"]
    if speed.get("workers") is not None:
        args.append(f"--workers {speed['workers']}")
    if speed.get("compile"):
        args.append(f"--compile {speed['compile']}")
    return " ".join(args)


def train_args(wildcards):
    """Every training hyper-parameter from the config, as `mopeft train` flags."""
    t = config["training"]
    return (
        f"--arch {config['model']['arch']} --image-size {config['model']['image_size']} "
        f"{schedule_args(wildcards)} --batch-size {t['batch_size']} --lr {t['lr']} "
        f"--weight-decay {t['weight_decay']} --ce-weight {t['loss']['ce']} "
        f"--dice-weight {t['loss']['dice']} --kfold {KFOLD} {speed_args(wildcards)}"
    )


def eval_dirs(wildcards):
    """Evaluation folders of every unit of a cell, for `mopeft combine --units`."""
    base = CELLS.format(**wildcards)
    return [f"{base}/units/{u}/eval/metrics.json" for u in units(wildcards.dataset)]


def eval_dir_args(wildcards, input):
    return " ".join(os.path.dirname(p) for p in input.units)


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
TABLE_NAMES = ["4_1", "4_2", "4_3", "4_4", "4_5", "4_6", "4_7", "4_8", "a1"]


def table_inputs(wildcards):
    """Named inputs of `mopeft table <name>`; each name becomes the flag `--<name>`."""
    name = wildcards.name
    inputs = {
        "config": f"results/{RUN}/config.yaml",
        # A.1 also reads the class list and categories of mopeft/detection/__init__.py.
        "code": code("report", "commands/table.py", "detection/__init__.py"),
    }
    if name in ("4_1", "4_2"):
        inputs["meta"] = [meta(d) for d in SEG_DATASETS]
    elif name in ("4_3", "4_4"):
        inputs["cells"] = main_cells(TABLE_METHODS[name.replace("_", ".")])
    elif name == "4_5":
        inputs["params"] = [f"results/{RUN}/efficiency/params/{m}.json" for m in EFF["methods"]]
        inputs["flops"] = [f"results/{RUN}/efficiency/flops/{m}.json" for m in EFF["methods"]]
        inputs["bench"] = f"results/{RUN}/efficiency/bench.json"
    elif name == "a1":
        inputs["cells"] = ap_files()  # FAIR-1M: the score-detections AP files
    else:
        inputs["cells"] = ablation_cells(study_for_table(name.replace("_", ".")))
    return inputs


def table_cli_name(wildcards):
    return wildcards.name.replace("_", ".")


def table_args(wildcards, input):
    """`--cells a b ...`, `--meta ...`, `--params/--flops/--bench` from the named inputs."""
    flags = []
    for key in ("meta", "cells", "params", "flops", "bench"):
        if key in input.keys():
            files = input[key]
            files = [files] if isinstance(files, str) else list(files)
            flags.append(f"--{key} " + " ".join(files))
    return " ".join(flags)


def gate_cell_args(wildcards, input):
    return " ".join(input.cells)


def raw_code(wildcards):
    """A miniature is regenerated when its generator changes; a real download never is."""
    if config["data"]["source"] == "miniature":
        return dataset_code(wildcards) + code("commands/miniature.py")
    return []


def write_config_snapshot(path, cfg, log):
    """results/<run>/config.yaml for the tables' provenance (atomic)."""
    import yaml
    from mopeft.io import write_text

    write_text(path, yaml.safe_dump(dict(cfg), sort_keys=False))
    Path(log).write_text(f"wrote {path}\n")
