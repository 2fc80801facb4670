# One training run per (dataset, method, variant, seed, unit): only the trainable tensors are saved.
# `mopeft train` holds a lock on its unit folder (.train.lock, undeclared, left in place) for the
# whole run: a second job on the same unit (e.g. after the controller died and its job was orphaned,
# README "If the controller dies") fails at once, naming the job that holds it.
# Every rule's log is appended to (`>>`), never truncated mid-job, and starts with a line naming the
# attempt's time, host and SLURM job; Snakemake itself deletes a job's log before each attempt.


rule train:
    """`mopeft train`: a method (variant = ablation option) on one unit of a prepared dataset."""
    input:
        data=wf.meta_of,
        weights=wf.weights_input,
    output:
        # Both declared, so a failed (re)run leaves neither: Snakemake deletes a failed job's outputs.
        # (The resume file train_state.pt stays undeclared on purpose: a rerun continues from it.)
        model=f"{CELLS}/units/{{unit}}/model.safetensors",
        train_log=f"{CELLS}/units/{{unit}}/train_log.json",
    log:
        "logs/{run}/train/{dataset}/{method}/{variant}/seed{seed}/{unit}.log",
    conda:
        "../../envs/mopeft.yaml"
    threads: wf.gpu_threads
    resources:
        **wf.gpu_constraint("train"),
        gpu=1,
        runtime=wf.train_runtime,
        mem_mb=wf.train_mem,
        cpus_per_task=wf.train_cpus,
        gpu_mem_mb=wf.train_gpu_mem,
        workers=wf.train_workers,
        cache_host_mb=wf.cache_host_mb,
    params:
        data=mw.data_dir,
        out=mw.out_dir,
        checkpoint=wf.checkpoint_args,
        options=wf.set_args,
        hyper=wf.train_args,
        kfold=wf.kfold_args,
        code=wf.method_code("train"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        # Record which GPU the scheduler gave the job (tests/test_slurm.py checks it).
        "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} >> {log:q}; "
        "OMP_NUM_THREADS={threads} mopeft train --data {params.data:q} --unit {wildcards.unit:q}"
        " --method {wildcards.method:q} {params.options:q} {params.checkpoint:q} {params.hyper:q}"
        " {params.kfold:q} --seed {wildcards.seed:q} --workers {resources.workers:q}"
        " --cache-host-mb {resources.cache_host_mb:q} --out {params.out:q} >> {log:q} 2>&1"
