# Raw data (download or synthetic miniature), preparation into the common layout, SAM weights.

if config["model"]["weights"]:

    rule weights:
        """The base SAM checkpoint, sha256-verified by `mopeft weights` (ViT-B: the official
        download; tiny: the packaged checkpoint pretrained on generated scenes)."""
        input:
            code=command_code("weights"),
        output:
            config["model"]["weights"]["path"],
        log:
            "logs/weights.log",
        params:
            folder=out_dir,
            arch=config["model"]["arch"],
        conda:
            "../../envs/mopeft.yaml"
        resources:
            runtime=cpu_runtime,
            mem_mb=cpu_mem,
        shell:
            "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
            "mopeft weights --arch {params.arch:q} --out {params.folder:q} >> {log:q} 2>&1"


rule raw:
    """data/raw/<dataset>: the original archives (`mopeft download`; manual datasets print where
    to put them) or a synthetic miniature of the same layout (`mopeft miniature`)."""
    input:
        code=raw_code,
    output:
        directory(f"{RAW}/{{dataset}}"),
    log:
        f"logs/{RUN}/raw/{{dataset}}.log",
    params:
        command=config["data"]["source"],
    wildcard_constraints:
        dataset=_alternatives(REGISTERED),  # folder datasets: rules in folders.smk
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=prepare_runtime,
        mem_mb=cpu_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft {params.command:q} --dataset {wildcards.dataset:q} --out {output:q} >> {log:q} 2>&1"


rule prepare:
    """data/prepared/<dataset>/: images + uint8 labels + meta.json (written last, folder moved atomically)."""
    input:
        raw=raw_of,
        code=dataset_code("prepare"),
    output:
        f"{PREP}/{{dataset}}/meta.json",
    log:
        f"logs/{RUN}/prepare/{{dataset}}.log",
    params:
        root=prepared_root,
    wildcard_constraints:
        dataset=_alternatives(REGISTERED),  # folder datasets: rule prepare_folder
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=prepare_runtime,
        mem_mb=prepare_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft prepare --dataset {wildcards.dataset:q} --raw {input.raw:q} --out {params.root:q} >> {log:q} 2>&1"
