# Training: one job per run (dataset, variant, way, shot, algorithm, seed). The run's config
# travels as --set key=value arguments (a params value, so changing an override retrains that
# run and nothing else). An interrupted job leaves <run>.h5.partial; the next attempt resumes it.


rule train:
    input:
        run_data,
    output:
        "results/runs/{run}.h5",
    log:
        "results/logs/train/{run}.log",
    benchmark:
        "results/benchmarks/train/{run}.tsv"
    params:
        settings=train_arguments,
    threads: THREADS
    priority: long_jobs_first
    resources:
        device=DEVICE,
        **GPU_RESOURCES,
    conda:
        ENV_FILE
    shell:
        "metalandscape train {params.settings:q} --out {output:q} --device {resources.device:q}"
        " --threads {threads} --quiet > {log:q} 2>&1"
