# Folder datasets of the config (custom_datasets): the resolved entry, generated folders, preparation.
# They join the registered datasets at data/prepared/<key>/meta.json; everything after that (cells,
# tables, figures) treats both kinds alike.


rule custom_spec:
    """data/prepared/<key>.folder.json: the folder dataset's checked config entry with its defaults
    and folders filled in, what `mopeft prepare --spec` reads (no config value enters a shell line)."""
    output:
        f"{PREP}/{{dataset}}.folder.json",
    log:
        f"logs/{RUN}/custom_spec/{{dataset}}.log",
    params:
        entry=resolved_folder,
    wildcard_constraints:
        dataset=_alternatives(CUSTOM),
    run:
        write_folder_spec(output[0], params.entry, log[0])


rule scenes:
    """data/raw/<key>/{images,masks}: a generated folder dataset (`source: {generate: scenes}`),
    scenes labelled by shape type, written by `mopeft scenes`."""
    input:
        code=command_code("scenes"),
    output:
        directory(f"{RAW}/{{dataset}}"),
    log:
        f"logs/{RUN}/scenes/{{dataset}}.log",
    params:
        scene_count=lambda wildcards: scene_source(wildcards)["count"],
        scene_seed=lambda wildcards: scene_source(wildcards).get("seed", 0),
    wildcard_constraints:
        dataset=_alternatives(GENERATED),
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=prepare_runtime,
        mem_mb=cpu_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft scenes --count {params.scene_count:q} --seed {params.scene_seed:q} --out {output:q} >> {log:q} 2>&1"


rule prepare_folder:
    """data/prepared/<key>/: a folder dataset through `mopeft prepare`'s common path (pairs, sizes,
    label values checked; sha256 of every source in meta.json, written last; folder moved atomically)."""
    input:
        spec=folder_spec_file,
        sources=folder_sources,
        code=folder_code,
    output:
        f"{PREP}/{{dataset}}/meta.json",
    log:
        f"logs/{RUN}/prepare/{{dataset}}.log",
    params:
        root=prepared_root,
    wildcard_constraints:
        dataset=_alternatives(CUSTOM),
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=prepare_runtime,
        mem_mb=prepare_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft prepare --spec {input.spec:q} --out {params.root:q} >> {log:q} 2>&1"
