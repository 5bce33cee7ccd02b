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


rule fig3:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig3.rst",
            category="Overtraining (fig. 3)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig3.rst",
            category="Overtraining (fig. 3)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig3(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig3 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig4:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig4.rst",
            category="Finetune baseline (fig. 4)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig4.rst",
            category="Finetune baseline (fig. 4)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig4(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig4 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig6:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig6.rst",
            category="Finetune coherence and trajectory norms (fig. 6)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig6.rst",
            category="Finetune coherence and trajectory norms (fig. 6)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig6(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig6 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig7:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig7.rst",
            category="Gradient coherence, T = 1 (fig. 7)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig7.rst",
            category="Gradient coherence, T = 1 (fig. 7)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig7(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig7 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig9:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig9.rst",
            category="Regularized MAML (fig. 9)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig9.rst",
            category="Regularized MAML (fig. 9)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig9(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig9 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig10:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig10.rst",
            category="Meta-train and meta-test accuracy (fig. 10)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig10.rst",
            category="Meta-train and meta-test accuracy (fig. 10)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig10(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig10 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig11:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig11.rst",
            category="Trajectory coherence, every setting (fig. 11)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig11.rst",
            category="Trajectory coherence, every setting (fig. 11)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig11(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig11 --input {input} --out {output.pdf} > {log} 2>&1"


rule fig12:
    input:
        figure_input,
    output:
        pdf=report(
            "results/figures/{name}.pdf",
            caption="../report/fig12.rst",
            category="Gradient coherence, every setting (fig. 12)",
            labels={"figure": "{name}", "format": "pdf"},
        ),
        png=report(
            "results/figures/{name}.png",
            caption="../report/fig12.rst",
            category="Gradient coherence, every setting (fig. 12)",
            labels={"figure": "{name}", "format": "png"},
        ),
    log:
        "results/logs/figures/{name}.log",
    wildcard_constraints:
        name=r"fig12(_[A-Za-z0-9]+)?",
    conda:
        ENV_FILE
    shell:
        "metalandscape figure fig12 --input {input} --out {output.pdf} > {log} 2>&1"
