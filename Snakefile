# mopeft: parameter-efficient fine-tuning of SAM ViT-B on the 22 MESS datasets + FAIR-1M.
# Thin rules over the `mopeft` CLI; the contract (paths, JSON) is docs/architecture.md.
#   snakemake --cores all                                  # the study (config/config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml      # the CPU miniature (make demo)
#   snakemake --cores all --configfile config/own-data-cpu.yaml my.yaml   # your data on a CPU (README)
#   snakemake --profile slurm                              # on a SLURM cluster (README.md)

import os
import sys

from snakemake.utils import min_version

min_version("9.17")  # pyproject's `pipeline` extra: snakemake>=9.17,<10


configfile: "config/config.yaml"


# The rules call `mopeft`: the one installed beside the Python that runs Snakemake (the venv's
# .venv/bin), so `.venv/bin/snakemake ...` works from a fresh shell with no venv activated. Put
# first on the jobs' PATH (they inherit Snakemake's environment, on SLURM too), not hard-coded in
# every rule: a rule's conda env (`--sdm conda`) is activated inside the job and so still comes
# first, and the printed commands stay the documented `mopeft ...` lines. (A write, not a variable
# the workflow requires: no `envvars:`, which would ship this machine's PATH to remote executors.)
_BIN = os.path.dirname(sys.executable)
_PATH = os.environ.get("PATH", "")
if _PATH.split(os.pathsep)[0] != _BIN:
    os.environ.update(PATH=os.pathsep.join([_BIN, _PATH]) if _PATH else _BIN)


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/folders.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/efficiency.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


localrules:
    all,
    config_snapshot,
    custom_spec,


rule all:
    """Every table (4.1-4.8, A.1), Figures 4.1 and 4.2 and the training curves of the configured run,
    except those with nothing to build (a section whose datasets the run does not list, an empty
    method list): mopeft.plan.workflow's final_outputs asks only for what has inputs."""
    default_target: True
    input:
        wf.final_outputs(),
