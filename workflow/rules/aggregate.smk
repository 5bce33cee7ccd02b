# Aggregate: every metric file of a family -> results/aggregate/<family>.nc and .csv. The file
# list goes through results/aggregate/<family>.inputs.txt: the paper's families have tens of
# thousands of files, far past what one shell command line may hold.


rule aggregate_inputs:
    input:
        family_metric_dirs,
    output:
        "results/aggregate/{family}.inputs.txt",
    log:
        "results/logs/aggregate/{family}.inputs.log",
    params:
        files=family_metric_files,
    run:
        write_listing(params.files, output[0], log[0])


rule aggregate:
    input:
        listing="results/aggregate/{family}.inputs.txt",
        metrics=family_metric_dirs,
    output:
        netcdf="results/aggregate/{family}.nc",
        csv="results/aggregate/{family}.csv",
    log:
        "results/logs/aggregate/{family}.log",
    conda:
        ENV_FILE
    shell:
        "metalandscape aggregate --inputs-from {input.listing} --out {output.netcdf}"
        " --csv {output.csv} > {log} 2>&1"
