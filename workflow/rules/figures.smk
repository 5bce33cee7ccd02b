# Figures: one rule per figure, each drawn from one family's aggregate. A figure is scheduled
# only when some family has what it needs (see FIGURE_NEEDS in common.smk); its output is
# results/figures/<figure>.pdf, or <figure>_<family>.pdf when several families qualify.


rule fig2:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig2.rst",
            category="Flatness (fig. 2)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig2.rst",
            category="Flatness (fig. 2)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig2(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig2 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig5:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig5.rst",
            category="Trajectory coherence (fig. 5)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig5.rst",
            category="Trajectory coherence (fig. 5)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig5(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig5 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig8:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig8.rst",
            category="Gradient coherence (fig. 8)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig8.rst",
            category="Gradient coherence (fig. 8)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig8(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig8 --input {input} --out {output.pdf} > {log} 2>&1"
