# Thin adapters from the experiment grid (metalandscape.grid, built once from the validated
# config when the workflow is parsed) to the rules' input, params and priority functions. A bad
# grid fails here, before any job starts, with one line.

import json
import os
import sys

from snakemake.exceptions import WorkflowError

from metalandscape.grid import FOLDER_DATASETS, GridError, bundle_name, build_grid, data_path

# The Snakefile checked the config (one line per bad key, each metric's settings against its
# plugin's rules: metalandscape.metrics.schema) and let Snakemake fill in the defaults.
try:
    GRID = build_grid(config)
except GridError as error:
    sys.exit(f"invalid workflow config: {error}")  # the one line, without a traceback
for line in [*GRID.notes, *GRID.skipped.values()]:
    print(line, file=sys.stderr)

ENV_FILE = {
    "cuda": "../../envs/metalandscape-cuda.yaml",
}.get(config["device"], "../../envs/metalandscape.yaml")
DEVICE = config["device"]
THREADS = config["threads"]
# GPU jobs ask for one GPU (run with --resources gpu=N); CPU jobs ask for none.
GPU_RESOURCES = {"gpu": 1} if DEVICE == "cuda" else {}
CLAIMS_OUTPUTS = ["results/claims.md", "results/claims.csv", "results/claims.html"]


def run_of(wildcards):
    return GRID.runs[wildcards.run]


def train_arguments(wildcards):
    """``--set key=value`` pairs of the run's config (a params value: changing one retrains)."""
    return run_of(wildcards).train_arguments()


def long_jobs_first(wildcards):
    """Priority of a run's train and metrics jobs (metalandscape.grid.Run.scheduling_priority)."""
    return run_of(wildcards).scheduling_priority


def run_data(wildcards):
    return GRID.data_inputs(wildcards.run)


def group_runs(wildcards):
    return GRID.lockstep_groups()[wildcards.group]


def group_data(wildcards):
    return GRID.data_inputs(group_runs(wildcards)[0])


def group_train_arguments(wildcards):
    """The lockstep group's ``--set`` pairs (no seed) and ``--seeds``, in output order."""
    return GRID.group_train_arguments(wildcards.group)


def group_priority(wildcards):
    return GRID.runs[group_runs(wildcards)[0]].scheduling_priority


def epoch_arguments(wildcards):
    return run_of(wildcards).epoch_arguments()


def bundle_settings_json(bundle):
    """The settings of a bundle's metrics only, so that another metric's settings change
    reruns nothing here."""
    return json.dumps({name: config["metrics"].get(name) or {} for name in bundle}, sort_keys=True)


def family_metric_files(wildcards):
    return GRID.metric_files(wildcards.family)


def write_listing(files, listing, log):
    """The aggregate's input list (one path a line)."""
    with open(listing, "w") as handle:
        handle.writelines(f"{path}\n" for path in files)
    with open(log, "w") as handle:
        handle.write(f"{len(files)} metric files listed in {listing}\n")


def claims_inputs():
    """Every family's aggregate: the claims table reads them all."""
    return [f"results/aggregate/{family}.nc" for family in GRID.families]


def claims_thresholds_json():
    """The config's ``claims:`` thresholds as the JSON ``metalandscape claims`` takes."""
    return json.dumps(config.get("claims") or {}, sort_keys=True)


def figure_input(wildcards):
    return f"results/aggregate/{GRID.figures[wildcards.name].family}.nc"


def all_targets():
    """The targets of the all rule: every family's aggregate, every scheduled figure, claims."""
    targets = [f"results/aggregate/{family}.{ext}" for family in GRID.families for ext in ("nc", "csv")]
    targets += [f"results/figures/{name}.{ext}" for name in GRID.figures for ext in ("pdf", "png")]
    return targets + CLAIMS_OUTPUTS
