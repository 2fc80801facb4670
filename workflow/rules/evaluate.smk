# Evaluation of each unit, the cell's combined metrics.json, and the FAIR-1M detection chain.


rule evaluate:
    """`mopeft evaluate`: MESS-protocol confusion matrix and (MoPEFT) gate values of one unit."""
    input:
        model=f"{CELLS}/units/{{unit}}/model.safetensors",
        data=wf.meta_of,
    output:
        # Every file `mopeft evaluate` writes, so a failed (re)run leaves none of them behind.
        metrics=f"{CELLS}/units/{{unit}}/eval/metrics.json",
        confusion=f"{CELLS}/units/{{unit}}/eval/confusion.npy",
        gates=f"{CELLS}/units/{{unit}}/eval/gates.npz",
        per_image=f"{CELLS}/units/{{unit}}/eval/per_image.npz",
        examples=directory(f"{CELLS}/units/{{unit}}/eval/examples"),  # Fig. 4.1's predictions
    log:
        "logs/{run}/evaluate/{dataset}/{method}/{variant}/seed{seed}/{unit}.log",
    conda:
        "../../envs/mopeft.yaml"
    threads: wf.eval_threads
    resources:
        **wf.gpu_constraint("evaluate"),
        gpu=1,
        runtime=wf.eval_runtime,
        mem_mb=wf.eval_mem,
        cpus_per_task=wf.eval_cpus,
        gpu_mem_mb=wf.eval_gpu_mem,
        workers=wf.eval_workers,
    params:
        data=mw.data_dir,
        out=mw.out_dir,
        kfold=wf.kfold_args,
        examples=wf.examples_args,
        code=wf.method_code("evaluate"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "OMP_NUM_THREADS={threads} mopeft evaluate --model {input.model:q} --data {params.data:q}"
        " --unit {wildcards.unit:q} {params.kfold:q} {params.examples:q} --workers {resources.workers:q}"
        " --out {params.out:q} >> {log:q} 2>&1"


rule combine:
    """`mopeft combine`: the cell's metrics.json from its units (single, mean of tasks, or pooled folds)."""
    input:
        units=wf.eval_dirs,
        meta=wf.meta_of,
    output:
        f"{CELLS}/metrics.json",
    log:
        "logs/{run}/combine/{dataset}/{method}/{variant}/seed{seed}.log",
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        units=mw.eval_dir_args,
        kfold=wf.kfold_args,
        code=wf.code("combine"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft combine --units {params.units:q} --dataset-meta {input.meta:q} {params.kfold:q}"
        " --variant {wildcards.variant:q} --seed {wildcards.seed:q} --out {output:q} >> {log:q} 2>&1"


rule detect:
    """FAIR-1M (Table A.1): oriented boxes from the masks of a fine-tuned model (Masks2Boxes head)."""
    input:
        model=wf.fair1m_model,
        data=wf.meta(DET["dataset"]),
    output:
        f"results/{{run}}/cells/{DET['dataset']}/{{method}}/default/seed{{seed}}/detections.json",
    log:
        "logs/{run}/detect/{method}/seed{seed}.log",
    conda:
        "../../envs/mopeft.yaml"
    threads: wf.eval_threads
    resources:
        **wf.gpu_constraint("detect"),
        gpu=1,
        runtime=wf.detect_runtime,
        mem_mb=wf.detect_mem,
        cpus_per_task=wf.detect_cpus,
        gpu_mem_mb=wf.detect_gpu_mem,
    params:
        data=mw.data_dir,
        code=wf.method_code("detect"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "OMP_NUM_THREADS={threads} mopeft detect --model {input.model:q} --data {params.data:q}"
        " --out {output:q} >> {log:q} 2>&1"


rule score_detections:
    """DOTA-style VOC AP per FAIR-1M class at oriented IoU 0.5."""
    input:
        pred=f"results/{{run}}/cells/{DET['dataset']}/{{method}}/default/seed{{seed}}/detections.json",
        data=wf.meta(DET["dataset"]),
    output:
        f"results/{{run}}/cells/{DET['dataset']}/{{method}}/default/seed{{seed}}/ap.json",
    log:
        "logs/{run}/score_detections/{method}/seed{seed}.log",
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        gt=mw.fair1m_annotations,
        code=wf.code("score_detections"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft score-detections --pred {input.pred:q} --gt {params.gt:q} --method {wildcards.method:q}"
        " --out {output:q} >> {log:q} 2>&1"
