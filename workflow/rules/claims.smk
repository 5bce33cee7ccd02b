# Claims: the paper's claims checked on every family's aggregate, with the thresholds of the
# config's claims: mapping (keys: metalandscape.claims.Thresholds), as results/claims.md and
# results/claims.csv, and the window sensitivity (each claim statistic with its window starting
# at 0, 100, 500, 1,000, ...) as results/claims_windows.{csv,md} and results/figures/windows.*;
# claims_html renders the table as results/claims.html for the report
# (Snakemake's report shows HTML inline but offers .md and .csv only as downloads).
#
#   snakemake --cores all results/claims.md      # rebuilds the aggregates it needs, then this


# With intervention runs (regularized MAML, Sharp-MAML) beside MAML, the rule also writes the
# paired comparison (metalandscape.interventions) as results/interventions.{md,csv} and
# results/figures/interventions.*.
INTERVENTION_OUTPUTS = (
    {
        "interventions_csv": "results/interventions.csv",
        "interventions_md": "results/interventions.md",
        "interventions_pdf": "results/figures/interventions.pdf",
        "interventions_png": report(
            "results/figures/interventions.png",
            caption="../report/interventions.rst",
            category="Claims",
        ),
    }
    if GRID.has_interventions()
    else {}
)


rule claims:
    input:
        claims_inputs(),
    output:
        md=report("results/claims.md", caption="../report/claims.rst", category="Claims"),
        csv=report("results/claims.csv", caption="../report/claims.rst", category="Claims"),
        windows_csv="results/claims_windows.csv",
        windows_md="results/claims_windows.md",
        windows_pdf="results/figures/windows.pdf",
        windows_png=report(
            "results/figures/windows.png", caption="../report/windows.rst", category="Claims"
        ),
        **INTERVENTION_OUTPUTS,
    log:
        "results/logs/claims.log",
    params:
        inputs=lambda wildcards, input: [text for path in input for text in ("--input", path)],
        thresholds=claims_thresholds_json(),
        config_name=lambda wildcards: " + ".join(os.path.relpath(p) for p in workflow.configfiles),
        interventions=lambda wildcards, output: (
            [
                "--interventions-csv",
                output.interventions_csv,
                "--interventions-md",
                output.interventions_md,
                "--interventions-figure",
                output.interventions_pdf,
            ]
            if INTERVENTION_OUTPUTS
            else []
        ),
    conda:
        ENV_FILE
    shell:
        "metalandscape claims {params.inputs:q} --thresholds-json {params.thresholds:q}"
        " --config-name {params.config_name:q} --out-csv {output.csv:q} --out-md {output.md:q}"
        " --windows-csv {output.windows_csv:q} --windows-md {output.windows_md:q}"
        " --windows-figure {output.windows_pdf:q} {params.interventions:q} > {log:q} 2>&1"


rule claims_html:
    input:
        md="results/claims.md",
        csv="results/claims.csv",
    output:
        report("results/claims.html", caption="../report/claims.rst", category="Claims"),
    log:
        "results/logs/claims_html.log",
    localrule: True
    run:
        from metalandscape.claims_html import write_claims_html

        write_claims_html(input.md, input.csv, output[0], log[0])
