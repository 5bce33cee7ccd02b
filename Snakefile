# metalandscape: the loss landscape of gradient-based meta-learning (Guiroy, Verma & Pal,
# arXiv 1907.07287) as a workflow over the `metalandscape` command:
#
#   data -> train (results/runs) -> metrics (results/metrics) -> aggregate -> figures
#
#   snakemake --cores all                                   # the default grid (config.yaml)
#   snakemake --cores all --configfile workflow/presets/tiny.yaml
#   snakemake --workflow-profile profiles/slurm --configfile workflow/presets/paper.yaml
#   snakemake --report report.html                          # figures with their captions
#
# --configfile merges into config.yaml: mappings are merged key by key, lists (experiments,
# figures, shots, ...) are replaced whole. A preset therefore replaces the experiment list, but
# a metric setting it leaves out keeps config.yaml's value, so presets spell out every setting.
#
# What reruns: Snakemake reruns a job when an input is newer (mtime), its params change (a run's
# config, a metric's settings or epochs), its rule's shell text changes, or its set of inputs
# changes. It does not watch the package's Python code: after changing only plotting code, run
#   snakemake --cores all --forcerun fig2 fig5 fig8
# which redraws figures and retrains nothing. After editing rules or the config in ways that
# should not invalidate finished runs (say, rewording a shell line), keep what exists with
#   snakemake --cores all --rerun-triggers mtime
# and see what would rerun and why first with `snakemake -n --summary` or `-n -r`.
#
# GPUs: with `device: cuda`, train and metrics jobs ask for resources gpu=1. Locally, run
# `snakemake --cores all --resources gpu=N`; each job leases its own GPU (metalandscape.gpu_lease:
# lock files, CUDA_VISIBLE_DEVICES). Under SLURM the scheduler assigns the GPU.

import sys

from snakemake.utils import min_version, validate

from metalandscape.metrics.schema import ConfigSchemaError, validate_config
from metalandscape.runs import RUN_ID_PATTERN

min_version("9.0")


configfile: "config.yaml"


# One line per bad key (metalandscape.metrics.schema), then Snakemake's check fills the defaults.
try:
    validate_config(config, "workflow/schemas/config.schema.yaml")
except ConfigSchemaError as error:
    sys.exit(f"invalid workflow config: {error}")  # the one line, without a traceback
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


wildcard_constraints:
    run=RUN_ID_PATTERN,
    family=r"[A-Za-z0-9]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/import.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/claims.smk"


localrules:
    all,


rule all:
    input:
        all_targets(),
    default_target: True
