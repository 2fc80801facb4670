# Fig. 4.1 (example predictions) and the training curves of every main cell, for the report.


rule examples_figure:
    """Fig. 4.1: per dataset, fixed test images (first in hashed order), ground truth and each main
    method's prediction, from the predictions `mopeft evaluate --examples` saved."""
    input:
        cells=wf.example_cells(),
        examples=wf.unit_files(wf.example_cells(), "eval/examples"),
        data=[wf.meta(d) for d in wf.seg_datasets],
        config="results/{run}/config.yaml",
    output:
        png=report(
            "results/{run}/figures/examples.png",
            caption="../report/examples.rst",
            category="Figures",
        ),
        pdf="results/{run}/figures/examples.pdf",
        csv="results/{run}/figures/examples.csv",
    log:
        "logs/{run}/figures/examples.log",
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        cells=mw.figure_cell_args,
        data=mw.figure_meta_args,
        out=mw.out_prefix,
        code=wf.code("figure", "mopeft.report.examples"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft figure examples {params.cells:q} {params.data:q} --config {input.config:q} "
        "--out {params.out:q} >> {log:q} 2>&1"


rule training_curves:
    """Every training run's loss per step (rows: datasets, columns: methods); runs whose loss did
    not fall are outlined in red (and named in Tables 4.3/4.4)."""
    input:
        cells=wf.main_cells(),
        logs=wf.unit_files(wf.main_cells(), "train_log.json"),
        config="results/{run}/config.yaml",
    output:
        png=report(
            "results/{run}/figures/training_curves.png",
            caption="../report/training_curves.rst",
            category="Figures",
        ),
        pdf="results/{run}/figures/training_curves.pdf",
        csv="results/{run}/figures/training_curves.csv",
        summary="results/{run}/figures/training_curves_summary.csv",
    log:
        "logs/{run}/figures/training_curves.log",
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        cells=mw.figure_cell_args,
        out=mw.out_prefix,
        code=wf.code("figure", "mopeft.report.curves"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft figure training-curves {params.cells:q} --config {input.config:q} "
        "--out {params.out:q} >> {log:q} 2>&1"
