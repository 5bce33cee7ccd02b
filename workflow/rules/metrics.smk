# Metrics: one job per (run, metric) walks every measured epoch of the run and writes
# results/metrics/<run>/<metric>/epoch_NNNN.nc. One job per epoch would make the paper's DAG
# (~100k jobs) too slow to plan and pay a process start (~3 s) per epoch; one per run and
# metric keeps a new metric or new metric settings from redoing the others.


rule metrics:
    input:
        run="results/runs/{run}.h5",
        data=run_data,
    output:
        directory("results/metrics/{run}/{metric}"),
    log:
        "results/logs/metrics/{run}/{metric}.log",
    benchmark:
        "results/benchmarks/metrics/{run}/{metric}.tsv"
    params:
        epochs=epoch_arguments,
        settings=metric_settings_json,
        evaluation_seed=config["evaluation_seed"],
        out_dir=lambda wildcards: f"results/metrics/{wildcards.run}",
    threads: THREADS
    priority: long_jobs_first
    resources:
        device=DEVICE,
        **GPU_RESOURCES,
    conda:
        ENV_FILE
    shell:
        "metalandscape metrics --checkpoint {input.run} --metric {wildcards.metric}"
        " {params.epochs} --settings-json {params.settings:q}"
        " --evaluation-seed {params.evaluation_seed} --out-dir {params.out_dir}"
        " --device {resources.device} --threads {threads} --quiet > {log} 2>&1"
