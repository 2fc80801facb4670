# Folder datasets of the config (custom_datasets): the resolved entry, generated folders, preparation.
# They join the registered datasets at data/prepared/<key>/meta.json; everything after that (cells,
# tables, figures) treats both kinds alike.


rule custom_spec:
    """data/prepared/<key>.folder.json: the folder dataset's checked config entry with its defaults
    and folders filled in, what `mopeft prepare --spec` reads (no config value enters a shell line).
    """
    output:
        f"{PREP}/{{dataset}}.folder.json",
    log:
        f"logs/{RUN}/custom_spec/{{dataset}}.log",
    wildcard_constraints:
        dataset=mw.alternatives(wf.custom),
    params:
        entry=wf.resolved_folder,
    run:
        mw.write_folder_spec(output[0], params.entry, log[0])


rule scenes:
    """data/raw/<key>/{images,masks}: a generated folder dataset (`source: {generate: scenes}`),
    scenes labelled by shape type, written by `mopeft scenes`."""
    output:
        directory(f"{RAW}/{{dataset}}"),
    log:
        f"logs/{RUN}/scenes/{{dataset}}.log",
    wildcard_constraints:
        dataset=mw.alternatives(wf.generated),
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.prepare_runtime,
        mem_mb=wf.cpu_mem,
    params:
        scene_count=wf.scene_count,
        scene_seed=wf.scene_seed,
        code=wf.code("scenes"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft scenes --count {params.scene_count:q} --seed {params.scene_seed:q} --out {output:q} >> {log:q} 2>&1"


rule prepare_folder:
    """data/prepared/<key>/: a folder dataset through `mopeft prepare`'s common path (pairs, sizes,
    label values checked; sha256 of every source in meta.json, written last; folder moved atomically).
    """
    input:
        spec=wf.folder_spec_file,
        sources=wf.folder_sources,
    output:
        f"{PREP}/{{dataset}}/meta.json",
    log:
        f"logs/{RUN}/prepare/{{dataset}}.log",
    wildcard_constraints:
        dataset=mw.alternatives(wf.custom),
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.prepare_runtime,
        mem_mb=wf.prepare_mem,
    params:
        root=mw.prepared_root,
        code=wf.folder_code,
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft prepare --spec {input.spec:q} --out {params.root:q} >> {log:q} 2>&1"
