# tests/test_slurm.py: the project's Snakefile plus one test-only rule that outlives a 1-minute
# SLURM time limit. It proves that a job killed for TIMEOUT is resubmitted (the profile's
# `retries`) with a larger `-t` (runtime scaled by the attempt, as every pipeline rule does).
# The test copies this file next to the checkout's Snakefile and runs `--snakefile` on it.


include: "Snakefile"


def _probe_runtime(wildcards, attempt):
    """1 minute on attempt 1, 2 on attempt 2: the pipeline's `base * attempt` scaling."""
    return attempt


rule slurm_timeout_probe:
    """Needs more than its first limit: sleeps 5 min when given 1 min (SLURM kills it at
    ~60-90 s, state TIMEOUT), finishes at once when the retry gets 2 min."""
    output:
        "results/slurm_timeout_probe/done.txt",
    log:
        "logs/slurm_timeout_probe.log",
    resources:
        runtime=_probe_runtime,
        mem_mb=200,
    shell:
        "echo \"attempt runtime={resources.runtime} min SLURM_JOB_ID=$SLURM_JOB_ID\" >> {log}; "
        "if [ {resources.runtime} -lt 2 ]; then sleep 300; fi; "
        "echo done > {output}"
