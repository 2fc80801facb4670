# The run's resolved configuration (what the tables record as provenance).


rule config_snapshot:
    """results/<run>/config.yaml: the merged, validated config of this run (reruns when it changes)."""
    output:
        "results/{run}/config.yaml",
    log:
        "logs/{run}/config_snapshot.log",
    params:
        config=config,
    run:
        mw.write_config_snapshot(output[0], params.config, log[0])
