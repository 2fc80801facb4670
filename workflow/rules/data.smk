# Raw data (download or synthetic miniature), preparation into the common layout, SAM weights.

if config["model"]["weights"]:

    rule weights:
        """The base SAM checkpoint, sha256-verified by `mopeft weights` (ViT-B/L/H: the
        official download; tiny: the packaged checkpoint pretrained on generated scenes). No code hash: the
        config's sha256 fixes its bytes, so no code change can change them (and rewriting the file
        would retrain every cell)."""
        output:
            config["model"]["weights"]["path"],
        log:
            "logs/weights.log",
        conda:
            "../../envs/mopeft.yaml"
        resources:
            runtime=wf.cpu_runtime,
            mem_mb=wf.cpu_mem,
        params:
            folder=mw.out_dir,
            arch=config["model"]["arch"],
        shell:
            'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
            "mopeft weights --arch {params.arch:q} --out {params.folder:q} >> {log:q} 2>&1"


rule raw:
    """data/raw/<dataset>: the original archives (`mopeft download`; manual datasets print where
    to put them) or a synthetic miniature of the same layout (`mopeft miniature`)."""
    output:
        directory(f"{RAW}/{{dataset}}"),
    log:
        f"logs/{RUN}/raw/{{dataset}}.log",
    wildcard_constraints:
        dataset=mw.alternatives(wf.registered),  # folder datasets: rules in folders.smk
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.prepare_runtime,
        mem_mb=wf.cpu_mem,
    params:
        command=config["data"]["source"],
        code=wf.raw_code,
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft {params.command:q} --dataset {wildcards.dataset:q} --out {output:q} >> {log:q} 2>&1"


rule prepare:
    """data/prepared/<dataset>/: images + uint8 labels + meta.json (written last, folder moved atomically)."""
    input:
        raw=wf.raw_of,
    output:
        f"{PREP}/{{dataset}}/meta.json",
    log:
        f"logs/{RUN}/prepare/{{dataset}}.log",
    wildcard_constraints:
        dataset=mw.alternatives(wf.registered),  # folder datasets: rule prepare_folder
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.prepare_runtime,
        mem_mb=wf.prepare_mem,
    params:
        root=mw.prepared_root,
        code=wf.prepare_code,
        test_images=wf.test_images,
        mess=wf.mess_args,
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft prepare --dataset {wildcards.dataset:q} --raw {input.raw:q} --out {params.root:q} "
        "--test-images {params.test_images:q} {params.mess:q} >> {log:q} 2>&1"
