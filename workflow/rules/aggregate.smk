# Aggregate: every metric file of a family (one per run and metric) -> results/aggregate/
# <family>.nc and .csv. The file list goes through results/aggregate/<family>.inputs.txt rather
# than the shell line: the paper's largest family has 600 files (~45 KB of paths), within a
# third of the 128 KiB a single shell argument may hold, and a grid a few times larger would not
# fit.


rule aggregate_inputs:
    input:
        family_metric_files,
    output:
        "results/aggregate/{family}.inputs.txt",
    log:
        "results/logs/aggregate/{family}.inputs.log",
    localrule: True
    run:
        write_listing(input, output[0], log[0])


rule aggregate:
    input:
        listing="results/aggregate/{family}.inputs.txt",
        metrics=family_metric_files,
    output:
        netcdf="results/aggregate/{family}.nc",
        csv="results/aggregate/{family}.csv",
    log:
        "results/logs/aggregate/{family}.log",
    group:
        "summary"
    conda:
        ENV_FILE
    shell:
        "metalandscape aggregate --inputs-from {input.listing:q} --out {output.netcdf:q}"
        " --csv {output.csv:q} > {log:q} 2>&1"
