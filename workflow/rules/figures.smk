# Figures: one rule per registered figure (metalandscape.figures.FIGURES), each drawn from one
# family's aggregate. The grid schedules a figure for every family that has what its spec
# needs: results/figures/<figure>.pdf, or <figure>_<family>.pdf when several families qualify.
# A figure the grid cannot draw is listed on stderr when the workflow is parsed; asking for it
# as a target fails with that line. In the report, each figure is its PNG under "Fig. NN
# title" (paper order), captioned with its runs' settings and seed counts
# (metalandscape.report).

from metalandscape.figures import FIGURES
from metalandscape.report import figure_caption, figure_category


def caption_of(spec):
    """The params function of a figure's report caption (its runs, from the grid)."""

    def caption(wildcards):
        return figure_caption(spec, GRID, wildcards.name, config)

    return caption


def scheduled_figure_input(wildcards):
    scheduled = GRID.figures.get(wildcards.name)
    if scheduled is None:
        figure = wildcards.name.split("_")[0]
        raise WorkflowError(
            GRID.skipped.get(figure, f"{wildcards.name} is not scheduled: see the config's figures")
        )
    return f"results/aggregate/{scheduled.family}.nc"


for spec in FIGURES.values():

    rule:
        name:
            spec.name
        input:
            scheduled_figure_input,
        output:
            # The report shows the PNG (one image per figure); the PDF is for papers.
            pdf="results/figures/{name}.pdf",
            png=report(
                "results/figures/{name}.png",
                caption="../report/figure.rst",
                category=figure_category(spec),
                labels={"figure": "{name}"},
            ),
        log:
            "results/logs/figures/{name}.log",
        params:
            figure=spec.name,
            caption=caption_of(spec),
        wildcard_constraints:
            name=rf"{spec.name}(_[A-Za-z0-9]+)?",
        group:
            "summary"
        conda:
            ENV_FILE
        shell:
            "metalandscape figure {params.figure:q} --input {input:q} --out {output.pdf:q}"
            " > {log:q} 2>&1"
