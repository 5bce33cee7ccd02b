# Runs trained elsewhere (an experiment's `imported:` section): `metalandscape import` turns each
# seed's per-checkpoint weight files into the run file the metrics read, renaming tensors as the
# section says (metalandscape.importing). Changing a file, the list or the rules re-imports.


rule import_run:
    input:
        data=run_data,
        checkpoints=lambda wildcards: run_of(wildcards).imported.files,
    output:
        "results/runs/{run}.h5",
    log:
        "results/logs/import/{run}.log",
    params:
        arguments=lambda wildcards: run_of(wildcards).import_arguments(),
    wildcard_constraints:
        run="|".join(GRID.imported_run_ids()) or "(?!)",
    conda:
        ENV_FILE
    shell:
        "metalandscape import {params.arguments:q} --out {output:q} --quiet > {log:q} 2>&1"
