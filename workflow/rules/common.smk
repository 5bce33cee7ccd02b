# From the validated config to the experiment grid the rules read: runs, their metrics and
# measured epochs, aggregate families and figures. Functions only (no rules) — everything here
# runs when the workflow is parsed, so a bad grid fails before any job starts.

import html
import json
import os
import shlex
from dataclasses import dataclass, field
from importlib.metadata import entry_points

import yaml
from snakemake.exceptions import WorkflowError

try:  # present wherever the package is installed beside Snakemake (the pip path)
    from metalandscape.config import ConfigError, resolve_run_config
except ImportError:  # Snakemake from elsewhere, jobs in conda envs: skip the early run checks
    ConfigError = ValueError
    resolve_run_config = None


RUN_ID = "{dataset}-{variant}-{way}way{shot}shot-{algorithm}-seed{seed}"
DEFAULT_EPOCHS = 100  # RunConfig.epochs, used only when metalandscape is not importable
ENV_FILE = {
    "cuda": "../../envs/metalandscape-cuda.yaml",
}.get(config["device"], "../../envs/metalandscape.yaml")
DEVICE = config["device"]
THREADS = config["threads"]
# GPU jobs ask for one GPU (run with --resources gpu=N); CPU jobs ask for none.
GPU_RESOURCES = {"gpu": 1} if DEVICE == "cuda" else {}
REAL_DATASETS = ("omniglot", "miniimagenet")

# What each figure needs from one family: a run of this kind, with one of these algorithms and
# every one of these metrics; optionally of one of these variants, with these accuracy splits,
# and (all_algorithms) such a run of each of these algorithms. A list means any one of them.
MAML_ALGORITHMS = {"maml", "fomaml", "regmaml"}
ALL_ALGORITHMS = MAML_ALGORITHMS | {"finetune"}
FIGURE_NEEDS = {
    "fig2": {
        "kind": "classification",
        "algorithms": {"maml", "fomaml"},
        "metrics": {"hessian", "accuracy"},
    },
    "fig3": {
        "kind": "classification",
        "algorithms": MAML_ALGORITHMS,
        "metrics": {"accuracy"},
        "variants": {"long"},
    },
    "fig4": {"kind": "classification", "algorithms": {"finetune"}, "metrics": {"accuracy"}},
    "fig5": {
        "kind": "classification",
        "algorithms": ALL_ALGORITHMS,
        "metrics": {"trajectory_coherence", "accuracy"},
    },
    "fig6": [
        {"kind": "classification", "algorithms": ALL_ALGORITHMS, "metrics": {"trajectory_coherence"}},
        {"kind": "classification", "algorithms": {"finetune"}, "metrics": {"gradient_coherence"}},
    ],
    "fig7": {
        "kind": "classification",
        "algorithms": MAML_ALGORITHMS,
        "metrics": {"gradient_coherence", "accuracy"},
    },
    "fig8": {
        "kind": "regression",
        "algorithms": ALL_ALGORITHMS,
        "metrics": {"gradient_coherence", "accuracy"},
    },
    "fig9": {
        "kind": "classification",
        "algorithms": {"maml", "regmaml"},
        "all_algorithms": {"maml", "regmaml"},
        "metrics": {"accuracy"},
    },
    "fig10": {
        "kind": "classification",
        "algorithms": {"maml", "fomaml"},
        "metrics": {"accuracy"},
        "accuracy_splits": {"train", "test"},
    },
    "fig11": {
        "kind": "classification",
        "algorithms": MAML_ALGORITHMS,
        "metrics": {"trajectory_coherence", "accuracy"},
    },
    "fig12": {
        "kind": "classification",
        "algorithms": MAML_ALGORITHMS,
        "metrics": {"gradient_coherence", "accuracy"},
    },
}


class GridError(ValueError):
    """A config that passes the schema but describes an impossible grid."""


@dataclass
class Run:
    """One training run: its id, RunConfig keys, and what is measured on it."""

    id: str
    dataset: str
    algorithm: str
    settings: dict
    epochs: int
    metrics: set = field(default_factory=set)
    metric_epochs: set = field(default_factory=set)
    families: set = field(default_factory=set)

    @property
    def kind(self):
        return "regression" if self.dataset == "sinusoid" else "classification"


def data_path(dataset):
    """The data_path a run of ``dataset`` trains on (None for sinusoid)."""
    if dataset == "sinusoid":
        return None
    if dataset == "fontglot":
        return "results/data/fontglot.npz"
    path = config["data"].get(f"{dataset}_path")
    if not path:
        raise GridError(
            f"an experiment uses {dataset} but data.{dataset}_path is not set; "
            f"point it at the {dataset} folder (see README's data layouts)"
        )
    return path


def measured_epochs(selection, epochs, where):
    """The checkpoint epochs to measure of a run with ``epochs`` epochs."""
    if isinstance(selection, dict):
        chosen = set(range(0, epochs + 1, selection["every"])) | {epochs}
    else:
        chosen = {epoch for epoch in selection if epoch <= epochs}
    if not chosen:
        raise GridError(f"{where}: metric_epochs {selection} selects no epoch of 0..{epochs}")
    return chosen


def known_metrics():
    """Registered metric plugin names (empty when the package's metadata is not visible)."""
    return {entry.name for entry in entry_points(group="metalandscape.metrics")}


def build_runs(config):
    """``{run id: Run}`` of every experiment group, checked and deduplicated."""
    runs = {}
    available = known_metrics()
    for index, group in enumerate(config["experiments"]):
        dataset = group["dataset"]
        where = f"experiments[{index}] ({dataset})"
        variant = group.get("variant", "default")
        family = group.get("family", dataset)
        ways = group.get("ways", [1] if dataset == "sinusoid" else None)
        if ways is None:
            raise GridError(f"{where}: 'ways' is required for {dataset}")
        if dataset == "sinusoid" and ways != [1]:
            raise GridError(f"{where}: sinusoid regression has ways [1], got {ways}")
        for name in group["metrics"]:
            if available and name not in available:
                raise GridError(
                    f"{where}: unknown metric {name!r} in 'metrics'; "
                    f"available: {', '.join(sorted(available))}"
                )
        for name in config["metrics"]:
            if available and name not in available:
                raise GridError(
                    f"unknown metric {name!r} under the top-level 'metrics' key; "
                    f"available: {', '.join(sorted(available))}"
                )
        overrides = dict(group.get("overrides", {}))
        path = data_path(dataset)
        for way in ways:
            for shot in group["shots"]:
                for algorithm in group["algorithms"]:
                    for seed in group["seeds"]:
                        run_id = RUN_ID.format(
                            dataset=dataset,
                            variant=variant,
                            way=way,
                            shot=shot,
                            algorithm=algorithm,
                            seed=seed,
                        )
                        settings = {
                            "dataset": dataset,
                            "algorithm": algorithm,
                            "seed": seed,
                            "variant": variant,
                            "n_way": way,
                            "k_shot": shot,
                            **overrides,
                        }
                        if path is not None:
                            settings["data_path"] = path
                        epochs = check_run(settings, f"{where} run {run_id}")
                        run = runs.get(run_id)
                        if run is None:
                            run = runs[run_id] = Run(
                                run_id, dataset, algorithm, settings, epochs
                            )
                        elif run.settings != settings:
                            raise GridError(
                                f"{where}: run {run_id} is also in an earlier experiment with "
                                "other overrides; give one of them another variant"
                            )
                        run.metrics.update(group["metrics"])
                        run.metric_epochs |= measured_epochs(
                            group.get("metric_epochs", config["metric_epochs"]), epochs, where
                        )
                        run.families.add(family)
    return runs


def check_run(settings, where):
    """The run's epoch count, after metalandscape.config checked every value."""
    if resolve_run_config is None:
        return settings.get("epochs", DEFAULT_EPOCHS)
    try:
        return resolve_run_config(settings).epochs
    except ConfigError as error:
        raise GridError(f"{where}: {error}") from None


def build_families(runs):
    """``{family: [run ids]}`` in config order."""
    families = {}
    for run in runs.values():
        for family in sorted(run.families):
            families.setdefault(family, []).append(run.id)
    return families


def figure_alternatives(figure):
    """The needs of ``figure`` as a list: a family meeting any one of them qualifies."""
    needs = FIGURE_NEEDS[figure]
    return needs if isinstance(needs, list) else [needs]


def run_meets(run, needs, algorithms):
    splits = (config["metrics"].get("accuracy") or {}).get("splits", ["test", "train"])
    return (
        run.kind == needs["kind"]
        and run.algorithm in algorithms
        and needs["metrics"] <= run.metrics
        and run.settings["variant"] in needs.get("variants", {run.settings["variant"]})
        and needs.get("accuracy_splits", set()) <= set(splits)
    )


def family_meets(family, needs):
    runs = [RUNS[run_id] for run_id in FAMILIES[family]]
    required = [{name} for name in needs.get("all_algorithms", ())] or [needs["algorithms"]]
    return all(any(run_meets(run, needs, algorithms) for run in runs) for algorithms in required)


def family_has(family, figure):
    return any(family_meets(family, needs) for needs in figure_alternatives(figure))


def describe_needs(figure):
    """What ``figure`` needs of a family, in words."""
    texts = []
    for needs in figure_alternatives(figure):
        text = (
            f"a {needs['kind']} run with metrics {sorted(needs['metrics'])} and one of "
            f"{sorted(needs['algorithms'])}"
        )
        if "all_algorithms" in needs:
            text += f" (each of {sorted(needs['all_algorithms'])})"
        if "variants" in needs:
            text += f" of variant {' or '.join(sorted(needs['variants']))}"
        if "accuracy_splits" in needs:
            text += f" with metrics.accuracy.splits {sorted(needs['accuracy_splits'])}"
        texts.append(text)
    return " or ".join(texts)


def build_figures(config):
    """``{output name: (figure, family)}`` of the figures to draw."""
    instances = []
    for entry in config["figures"]:
        if isinstance(entry, str):
            instances.extend((entry, family) for family in FAMILIES if family_has(family, entry))
            continue
        figure, family = entry["figure"], entry["family"]
        if family not in FAMILIES:
            raise GridError(f"figures: {figure} asks for family {family!r}, which no experiment has")
        if not family_has(family, figure):
            raise GridError(f"figures: {figure} needs, in family {family!r}, {describe_needs(figure)}")
        instances.append((figure, family))
    instances = list(dict.fromkeys(instances))
    counts = {}
    for figure, _ in instances:
        counts[figure] = counts.get(figure, 0) + 1
    return {
        (figure if counts[figure] == 1 else f"{figure}_{family}"): (figure, family)
        for figure, family in instances
    }


def grid_or_fail(builder, *args):
    try:
        return builder(*args)
    except GridError as error:
        raise WorkflowError(f"invalid workflow config: {error}") from None


RUNS = grid_or_fail(build_runs, config)
FAMILIES = build_families(RUNS)
FIGURES = grid_or_fail(build_figures, config)


# ---- input and parameter functions of the rules ------------------------------------------


def yaml_scalar(value):
    """A value as the YAML text ``metalandscape train --set key=...`` parses back to it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def train_arguments(wildcards):
    """``--set key=value ...`` of the run's config, shell-quoted, in a stable order."""
    settings = RUNS[wildcards.run].settings
    return " ".join(
        f"--set {shlex.quote(f'{key}={yaml_scalar(settings[key])}')}" for key in sorted(settings)
    )


def long_jobs_first(wildcards):
    """Scheduling priority: image-classification runs and their metrics (minutes) before the
    sinusoid's (seconds), so the longest chain (data, train, Hessian) starts first."""
    return 1 if RUNS[wildcards.run].kind == "classification" else 0


def run_data(wildcards):
    """The data file or check a run needs before it starts (nothing for sinusoid)."""
    dataset = RUNS[wildcards.run].dataset
    if dataset == "fontglot":
        return ["results/data/fontglot.npz"]
    if dataset in REAL_DATASETS:
        return [f"results/data/{dataset}.check.json"]
    return []


def run_epochs(run_id):
    return sorted(RUNS[run_id].metric_epochs)


def epoch_arguments(wildcards):
    return " ".join(f"--epoch {epoch}" for epoch in run_epochs(wildcards.run))


def metric_settings(name):
    return config["metrics"].get(name) or {}


def metric_settings_json(wildcards):
    return json.dumps({wildcards.metric: metric_settings(wildcards.metric)}, sort_keys=True)


def metric_dirs(run_id):
    return [f"results/metrics/{run_id}/{name}" for name in sorted(RUNS[run_id].metrics)]


def family_metric_dirs(wildcards):
    return [path for run_id in FAMILIES[wildcards.family] for path in metric_dirs(run_id)]


def family_metric_files(wildcards):
    """Every metric file of the family, as the aggregate's input list."""
    return [
        f"{directory}/epoch_{epoch:04d}.nc"
        for run_id in FAMILIES[wildcards.family]
        for directory in metric_dirs(run_id)
        for epoch in run_epochs(run_id)
    ]


def write_listing(files, listing, log):
    """The aggregate's input list, after checking that every metric file exists."""
    missing = [path for path in files if not os.path.isfile(path)]
    if missing:
        raise WorkflowError(f"{len(missing)} metric files missing, e.g. {missing[0]}")
    with open(listing, "w") as handle:
        handle.writelines(f"{path}\n" for path in files)
    with open(log, "w") as handle:
        handle.write(f"{len(files)} metric files listed in {listing}\n")


CLAIMS_OUTPUTS = ["results/claims.md", "results/claims.csv", "results/claims.html"]


def claims_inputs():
    """Every family's aggregate: the claims table reads them all."""
    return [f"results/aggregate/{family}.nc" for family in FAMILIES]


def claims_thresholds_json():
    """The config's ``claims:`` thresholds as the JSON ``metalandscape claims`` takes."""
    return json.dumps(config.get("claims") or {}, sort_keys=True)


CLAIMS_COLUMNS = [
    "data",
    "variant",
    "way",
    "shot",
    "algorithm",
    "statistic",
    "value",
    "ci_low",
    "ci_high",
    "direction",
    "threshold",
    "seeds",
    "verdict",
    "ci_excludes_threshold",
]


def write_claims_html(md, csv, out, log):
    """results/claims.html: the Markdown's preamble and one HTML table per claim."""
    import pandas as pd

    table = pd.read_csv(csv)
    preamble = []
    for line in open(md).read().splitlines():
        if line.startswith("## "):
            break
        if line.strip():
            preamble.append(f"<p>{html.escape(line.lstrip('# '))}</p>")
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Claims</title><style>"
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:90%}"
        "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#eee}</style></head><body>",
        *preamble,
    ]
    for claim, rows in table.groupby("claim", sort=True):
        parts.append(f"<h2>Claim {claim}: {html.escape(str(rows['title'].iloc[0]))}</h2>")
        columns = [name for name in CLAIMS_COLUMNS if name in rows.columns]
        parts.append(rows[columns].to_html(index=False, float_format="{:.4g}".format))
    if table.empty:
        parts.append("<p>No claim could be checked: the inputs lack the metrics.</p>")
    parts.append("</body></html>")
    with open(out, "w") as handle:
        handle.write("\n".join(parts) + "\n")
    with open(log, "w") as handle:
        handle.write(f"{len(table)} claim rows rendered to {out}\n")


def figure_input(wildcards):
    _, family = FIGURES[wildcards.name]
    return f"results/aggregate/{family}.nc"


def all_targets():
    """The targets of the all rule: every family's aggregate, every scheduled figure, claims."""
    targets = [
        f"results/aggregate/{family}.{extension}"
        for family in FAMILIES
        for extension in ("nc", "csv")
    ]
    targets += [f"results/figures/{name}.{ext}" for name in FIGURES for ext in ("pdf", "png")]
    targets += CLAIMS_OUTPUTS
    return targets
