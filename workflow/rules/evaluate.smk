# Evaluation of each unit, the cell's combined metrics.json, and the FAIR-1M detection chain.


rule evaluate:
    """`mopeft evaluate`: MESS-protocol confusion matrix and (MoPEFT) gate values of one unit."""
    input:
        model=f"{CELLS}/units/{{unit}}/model.pt",
        data=meta_of,
        code=method_code("evaluate"),
    output:
        # Every file `mopeft evaluate` writes, so a failed (re)run leaves none of them behind.
        metrics=f"{CELLS}/units/{{unit}}/eval/metrics.json",
        confusion=f"{CELLS}/units/{{unit}}/eval/confusion.npy",
        gates=f"{CELLS}/units/{{unit}}/eval/gates.npz",
        per_image=f"{CELLS}/units/{{unit}}/eval/per_image.npz",
        examples=directory(f"{CELLS}/units/{{unit}}/eval/examples"),  # Fig. 4.1's predictions
    log:
        "logs/{run}/evaluate/{dataset}/{method}/{variant}/seed{seed}/{unit}.log",
    params:
        data=data_dir,
        out=out_dir,
        kfold=kfold_args,
        examples=examples_args,
    threads: EVAL_THREADS
    conda:
        "../../envs/mopeft.yaml"
    resources:
        gpu=1,
        runtime=eval_runtime,
        mem_mb=eval_mem,
        cpus_per_task=eval_cpus,
        gpu_mem_mb=eval_gpu_mem,
        **gpu_constraint("evaluate"),
        workers=eval_workers,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "OMP_NUM_THREADS={threads} mopeft evaluate --model {input.model:q} --data {params.data:q}"
        " --unit {wildcards.unit:q} {params.kfold:q} {params.examples:q} --workers {resources.workers:q}"
        " --out {params.out:q} >> {log:q} 2>&1"


rule combine:
    """`mopeft combine`: the cell's metrics.json from its units (single, mean of tasks, or pooled folds)."""
    input:
        units=eval_dirs,
        meta=meta_of,
        code=command_code("combine"),
    output:
        f"{CELLS}/metrics.json",
    log:
        "logs/{run}/combine/{dataset}/{method}/{variant}/seed{seed}.log",
    params:
        units=eval_dir_args,
        kfold=kfold_args,
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=cpu_runtime,
        mem_mb=cpu_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft combine --units {params.units:q} --dataset-meta {input.meta:q} {params.kfold:q}"
        " --variant {wildcards.variant:q} --seed {wildcards.seed:q} --out {output:q} >> {log:q} 2>&1"


rule detect:
    """FAIR-1M (Table A.1): oriented boxes from the masks of a fine-tuned model (Masks2Boxes head)."""
    input:
        model=fair1m_model,
        data=meta(DET["dataset"]),
        code=method_code("detect"),
    output:
        f"results/{{run}}/cells/{DET['dataset']}/{{method}}/default/seed{{seed}}/detections.json",
    log:
        "logs/{run}/detect/{method}/seed{seed}.log",
    params:
        data=data_dir,
    threads: EVAL_THREADS
    conda:
        "../../envs/mopeft.yaml"
    resources:
        gpu=1,
        runtime=detect_runtime,
        mem_mb=detect_mem,
        cpus_per_task=detect_cpus,
        gpu_mem_mb=detect_gpu_mem,
        **gpu_constraint("detect"),
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "OMP_NUM_THREADS={threads} mopeft detect --model {input.model:q} --data {params.data:q}"
        " --out {output:q} >> {log:q} 2>&1"


rule score_detections:
    """DOTA-style VOC AP per FAIR-1M class at oriented IoU 0.5."""
    input:
        pred=f"results/{{run}}/cells/{DET['dataset']}/{{method}}/default/seed{{seed}}/detections.json",
        data=meta(DET["dataset"]),
        code=command_code("score_detections"),
    output:
        f"results/{{run}}/cells/{DET['dataset']}/{{method}}/default/seed{{seed}}/ap.json",
    log:
        "logs/{run}/score_detections/{method}/seed{seed}.log",
    params:
        gt=fair1m_annotations,
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=cpu_runtime,
        mem_mb=cpu_mem,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        "mopeft score-detections --pred {input.pred:q} --gt {params.gt:q} --method {wildcards.method:q}"
        " --out {output:q} >> {log:q} 2>&1"
