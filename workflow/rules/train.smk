# Training: one job per run (dataset, variant, way, shot, algorithm, seed), or one job per group
# of runs that differ only by seed (config `lockstep`, on by default; MAML and First-Order MAML),
# which trains them in lockstep and writes the same one file per run
# (metalandscape.grid.Grid.lockstep_groups). The run's config travels as --set key=value
# arguments (a params value, so changing an override retrains that run or group and nothing
# else). An interrupted job leaves <run>.h5.partial files; the next attempt resumes each run
# after its last finished epoch.


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
    wildcard_constraints:
        run="|".join(GRID.solo_run_ids()) or "(?!)",
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


# One rule per set of seeds (its outputs are the group's run files, seed by seed).
for seeds, groups in GRID.lockstep_rules().items():

    rule:
        name:
            "train_seeds_" + "_".join(str(seed) for seed in seeds)
        input:
            group_data,
        output:
            [f"results/runs/{{group}}-seed{seed}.h5" for seed in seeds],
        log:
            "results/logs/train/{group}-seeds" + "+".join(str(seed) for seed in seeds) + ".log",
        benchmark:
            "results/benchmarks/train/{group}-seeds" + "+".join(str(s) for s in seeds) + ".tsv"
        params:
            settings=group_train_arguments,
            out=lambda wildcards, output: [text for path in output for text in ("--out", path)],
        wildcard_constraints:
            group="|".join(groups),
        threads: THREADS
        priority: group_priority
        resources:
            device=DEVICE,
            # SLURM (the profile's set-resources name the one-run rule `train`): minutes, MB
            runtime=lambda wildcards, attempt: 1440 * attempt,
            mem_mb=16000,
            **GPU_RESOURCES,
        conda:
            ENV_FILE
        shell:
            "metalandscape train {params.settings:q} {params.out:q}"
            " --device {resources.device:q} --threads {threads} --quiet > {log:q} 2>&1"
