# Table 4.5: trainable parameters, FLOPs and measured train/inference time of every method.


rule params:
    """`mopeft params`: trainable / total parameters of one method (exact counts)."""
    output:
        "results/{run}/efficiency/params/{method}.json",
    log:
        "logs/{run}/efficiency/params/{method}.log",
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        arch=wf.params_arch,
        size=wf.params_size_arg,
        num_classes=wf.efficiency_num_classes,
        options=wf.method_args,
        code=wf.method_code("params"),
    shell:
        # The command prints JSON on stdout: write a temporary file and rename it (atomic output).
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft params --arch {params.arch:q} --method {wildcards.method:q} {params.size:q}"
        " --num-classes {params.num_classes:q} {params.options:q}"
        " --json > {output:q}.tmp 2>> {log:q} && mv {output:q}.tmp {output:q}"


rule flops:
    """`mopeft flops`: fvcore FLOPs of one inference at the efficiency image size."""
    output:
        "results/{run}/efficiency/flops/{method}.json",
    log:
        "logs/{run}/efficiency/flops/{method}.log",
    conda:
        "../../envs/mopeft.yaml"
    resources:
        runtime=wf.cpu_runtime,
        mem_mb=wf.cpu_mem,
    params:
        arch=config["model"]["arch"],
        image_size=EFF["image_size"],
        num_classes=wf.efficiency_num_classes,
        options=wf.method_args,
        code=wf.method_code("flops"),
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "mopeft flops --arch {params.arch:q} --method {wildcards.method:q} --image-size {params.image_size:q}"
        " --num-classes {params.num_classes:q} {params.options:q} --json --out {output:q} >> {log:q} 2>&1"


rule bench:
    """`mopeft bench`: train-step and inference time of every method on one GPU (relative to full FT)."""
    output:
        "results/{run}/efficiency/bench.json",
    log:
        "logs/{run}/efficiency/bench.log",
    conda:
        "../../envs/mopeft.yaml"
    threads: wf.gpu_threads
    resources:
        gpu=1,
        runtime=wf.eval_runtime,
        mem_mb=wf.train_mem,
    params:
        arch=config["model"]["arch"],
        image_size=EFF["image_size"],
        methods=",".join(EFF["methods"]),
        options=wf.bench_args,
        num_classes=wf.efficiency_num_classes,
        batch_size=config["training"]["batch_size"],
        code=wf.bench_code,
    shell:
        'echo "=== attempt $(date -u +%FT%TZ) on $(uname -n) (job ${{SLURM_JOB_ID:-local}}) ===" >> {log:q}; '
        "OMP_NUM_THREADS={threads} mopeft bench --arch {params.arch:q} --methods {params.methods:q}"
        " {params.options:q} --image-size {params.image_size:q} --num-classes {params.num_classes:q}"
        " --batch-size {params.batch_size:q} --json {output:q} >> {log:q} 2>&1"
