# Metrics: one job per run and metric bundle measures the bundle's metrics at every measured
# epoch in one pass (one adaptation per task and epoch, shared by them) and writes one netCDF
# per metric, results/metrics/<run>/<metric>.nc, with an epoch dimension. By default a run's
# metrics form one bundle; the config's separate_metrics each get their own, so that changing
# their settings reruns only them (params carry only the bundle's settings). One rule per
# distinct bundle (metalandscape.grid.Grid.bundle_runs), restricted to the runs it measures.


for bundle, bundle_run_ids in GRID.bundle_runs().items():

    rule:
        name:
            f"metrics__{bundle_name(bundle)}"
        input:
            run="results/runs/{run}.h5",
            data=run_data,
        output:
            **{name: f"results/metrics/{{run}}/{name}.nc" for name in bundle},
        log:
            f"results/logs/metrics/{{run}}/{bundle_name(bundle)}.log",
        benchmark:
            f"results/benchmarks/metrics/{{run}}/{bundle_name(bundle)}.tsv"
        params:
            metrics=[text for name in bundle for text in ("--metric", name)],
            epochs=epoch_arguments,
            settings=bundle_settings_json(bundle),
            evaluation_seed=config["evaluation_seed"],
            evaluation_head=config["evaluation_head"],
            out_dir="results/metrics/{run}",
        wildcard_constraints:
            run="|".join(bundle_run_ids),
        threads: THREADS
        priority: long_jobs_first
        resources:
            device=DEVICE,
            # SLURM (the profile's default-resources cover every other rule): minutes, MB
            runtime=lambda wildcards, attempt: 240 * attempt,
            mem_mb=16000,
            **GPU_RESOURCES,
        conda:
            ENV_FILE
        shell:
            "metalandscape metrics --checkpoint {input.run:q} {params.metrics:q} {params.epochs:q}"
            " --settings-json {params.settings:q} --evaluation-seed {params.evaluation_seed:q}"
            " --evaluation-head {params.evaluation_head:q}"
            " --out-dir {params.out_dir:q} --device {resources.device:q} --threads {threads}"
            " --quiet > {log:q} 2>&1"
