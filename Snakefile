# mopeft: parameter-efficient fine-tuning of SAM ViT-B on the 22 MESS datasets + FAIR-1M.
# Thin rules over the `mopeft` CLI; the contract (paths, JSON) is docs/architecture.md.
#   snakemake --cores all                                  # the study (config/config.yaml)
#   snakemake --cores 2 --configfile config/demo.yaml      # the CPU miniature (make demo)
#   snakemake --profile slurm                              # on a SLURM cluster (README.md)

configfile: "config/config.yaml"


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
    """Every table (4.1-4.8, A.1), Figures 4.1 and 4.2 and the training curves of the configured run."""
    input:
        final_outputs(),
    default_target: True
