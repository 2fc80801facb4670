# Tables 4.1-4.8 and A.1 (CSV for the report, Markdown and LaTeX beside it) and Figure 4.2.


rule table:
    """`mopeft table`: the study's values beside the thesis's, with mean ± std and n over seeds."""
    input:
        unpack(table_inputs),
    output:
        csv=report(
            "results/{run}/tables/table_{name}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"table": "{name}"},
        ),
        md="results/{run}/tables/table_{name}.md",
        tex="results/{run}/tables/table_{name}.tex",
    log:
        "logs/{run}/tables/table_{name}.log",
    params:
        key=table_key,
        args=table_args,
        bootstrap=bootstrap_args,
        losses=loss_args,
        out=out_prefix,
        paper=PAPER_DIR,
    wildcard_constraints:
        name="|".join(TABLE_BY_WILDCARD),
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=cpu_runtime,
        mem_mb=cpu_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft table {params.key:q} {params.args:q} {params.bootstrap:q} {params.losses:q}"
        " --config {input.config:q} --paper-dir {params.paper:q} --out {params.out:q} >> {log:q} 2>&1"


rule gate_frequency:
    """Figure 4.2: how often each PEFT module of MoPEFT is selected during inference."""
    input:
        cells=gate_cells(),
        code=command_code("figure"),
    output:
        png=report(
            "results/{run}/figures/gate_frequency.png",
            caption="../report/gate_frequency.rst",
            category="Figures",
        ),
        pdf="results/{run}/figures/gate_frequency.pdf",
        csv="results/{run}/figures/gate_frequency.csv",
        layers="results/{run}/figures/gate_frequency_layers.csv",
    log:
        "logs/{run}/figures/gate_frequency.log",
    params:
        cells=gate_cell_args,
        out=out_prefix,
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=cpu_runtime,
        mem_mb=cpu_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft figure gate-frequency --cells {params.cells:q} --out {params.out:q} >> {log:q} 2>&1"
