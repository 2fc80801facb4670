# Tables 4.1-4.8 and A.1 (CSV for the report, Markdown and LaTeX beside it) and Figure 4.2.


rule table:
    """`mopeft table`: the study's values beside the thesis's, with mean ± std and n over seeds."""
    input:
        unpack(wf.table_inputs),
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
    wildcard_constraints:
        name=mw.alternatives(mw.TABLE_BY_WILDCARD),
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        key=wf.table_key,
        args=mw.table_args,
        bootstrap=wf.bootstrap_args,
        losses=wf.loss_args,
        out=mw.out_prefix,
        paper=mw.PAPER_DIR,
        code=wf.table_code,
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft table {params.key:q} {params.args:q} {params.bootstrap:q} {params.losses:q}"
        " --config {input.config:q} --paper-dir {params.paper:q} --out {params.out:q} >> {log:q} 2>&1"


rule gate_frequency:
    """Figure 4.2: how often each PEFT module of MoPEFT is selected during inference."""
    input:
        cells=wf.gate_cells(),
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
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        cells=mw.cell_args,
        out=mw.out_prefix,
        code=wf.code("figure"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft figure gate-frequency --cells {params.cells:q} --out {params.out:q} >> {log:q} 2>&1"
