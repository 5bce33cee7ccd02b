# Data: the embedded fontglot set is built here; data set folders (Omniglot, MiniImagenet, class
# folders, a plugin's; given in config data.paths) are only checked, once, before their first
# training job: their layout, and that their train and test splits hold the most ways any
# experiment asks for.


rule fontglot:
    output:
        "results/data/fontglot.npz",
    log:
        "results/logs/data/fontglot.log",
    params:
        seed=config["data"]["fontglot"]["seed"],
        classes=config["data"]["fontglot"]["classes"],
    threads: config["data"]["fontglot"]["workers"]
    priority: 2
    conda:
        ENV_FILE
    shell:
        "metalandscape data fontglot --out {output:q} --seed {params.seed:q}"
        " --classes {params.classes:q} --workers {threads} --quiet > {log:q} 2>&1"


rule check_data:
    output:
        "results/data/{dataset}.check.json",
    log:
        "results/logs/data/{dataset}.check.log",
    params:
        path=lambda wildcards: data_path(config, wildcards.dataset),
        ways=lambda wildcards: GRID.largest_ways(wildcards.dataset),
        options=lambda wildcards: GRID.inspect_arguments(wildcards.dataset),
    wildcard_constraints:
        dataset="|".join(FOLDER_DATASETS),
    conda:
        ENV_FILE
    shell:
        "metalandscape data inspect --dataset {wildcards.dataset} --path {params.path:q}"
        " --ways {params.ways} {params.options:q} > {output:q} 2> {log:q}"
