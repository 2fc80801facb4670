# One training run per (dataset, method, variant, seed, unit): only the trainable tensors are saved.
# `mopeft train` holds a lock on its unit folder (.train.lock, undeclared, left in place) for the
# whole run: a second job on the same unit (e.g. after the controller died and its job was orphaned,
# README "If the controller dies") fails at once, naming the job that holds it.
# Every rule's log is appended to (`>>`), never truncated mid-job, and starts with a line naming the
# attempt's time, host and SLURM job; Snakemake itself deletes a job's log before each attempt.


rule train:
    """`mopeft train`: a method (variant = ablation option) on one unit of a prepared dataset."""
    input:
        data=meta_of,
        weights=weights_input,
        code=method_code("train"),
    output:
        # Both declared, so a failed (re)run leaves neither: Snakemake deletes a failed job's outputs.
        # (The resume file train_state.pt stays undeclared on purpose: a rerun continues from it.)
        model=f"{CELLS}/units/{{unit}}/model.pt",
        train_log=f"{CELLS}/units/{{unit}}/train_log.json",
    log:
        "logs/{run}/train/{dataset}/{method}/{variant}/seed{seed}/{unit}.log",
    params:
        data=data_dir,
        out=out_dir,
        checkpoint=checkpoint_args,
        options=set_args,
        hyper=train_args,
        kfold=kfold_args,
    threads: GPU_THREADS
    conda:
        "../../envs/mopeft.yaml"
    resources:
        gpu=1,
        runtime=train_runtime,
        mem_mb=train_mem,
        cpus_per_task=train_cpus,
        gpu_mem_mb=train_gpu_mem,
        **gpu_constraint("train"),
        workers=train_workers,
        cache_host_mb=cache_host_mb,
    shell:
        "echo \"=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===\" >> {log:q}; "
        # Record which GPU the scheduler gave the job (tests/test_slurm.py checks it).
        "echo CUDA_VISIBLE_DEVICES=${{CUDA_VISIBLE_DEVICES:-unset}} >> {log:q}; "
        "OMP_NUM_THREADS={threads} mopeft train --data {params.data:q} --unit {wildcards.unit:q}"
        " --method {wildcards.method:q} {params.options:q} {params.checkpoint:q} {params.hyper:q}"
        " {params.kfold:q} --seed {wildcards.seed:q} --workers {resources.workers:q}"
        " --cache-host-mb {resources.cache_host_mb:q} --out {params.out:q} >> {log:q} 2>&1"
