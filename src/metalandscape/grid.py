"""The experiment grid: from the validated workflow config to runs, metric bundles and figures.

:func:`build_grid` reads the config (config.yaml merged with a preset, after the schema check)
and returns a :class:`Grid`: every training run (a :class:`~metalandscape.runs.RunKey` with its
RunConfig settings), what is measured on it and at which epochs, the metric bundles (the metrics
one job measures in one pass), the aggregate families and the figures that can be drawn, each
skipped figure with the reason. An impossible grid raises one :class:`GridError` with a
one-line message. The workflow's rules read only this; importing it is cheap (no torch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import yaml

from metalandscape.algorithms import ALGORITHMS, unsupported_metric_reason
from metalandscape.config import ConfigError, resolve_run_config
from metalandscape.data import DATASET_REGISTRY
from metalandscape.data.splits import finn_split_sizes
from metalandscape.figures.spec import FigureSpec, Needs
from metalandscape.importing import CheckpointImportError, checked_order, parse_checkpoint_argument
from metalandscape.lockstep import lockstep_refusal
from metalandscape.runs import RunKey

#: Run-config keys that say how a data set's image files are read (one set per data set).
DATA_OPTION_KEYS = ("resize", "image_size", "image_channels")
#: The embedded data set, built by the workflow.
FONTGLOT_FILE = DATASET_REGISTRY["fontglot"].default_path
#: Data sets read from a folder the config names (``data.paths``), checked once before training.
FOLDER_DATASETS = tuple(
    name for name, spec in DATASET_REGISTRY.items() if spec.needs_files and not spec.default_path
)


class GridError(ValueError):
    """A config that passes the schema but describes an impossible grid."""


@dataclass(frozen=True)
class Imported:
    """The checkpoint files of one run trained elsewhere and the rules renaming its tensors."""

    checkpoints: tuple[tuple[int, str], ...]  # (meta-iteration, file), in training order
    rename: tuple[str, ...] = ()  # OLD=NEW
    drop: tuple[str, ...] = ()  # regular expressions

    @property
    def files(self) -> list[str]:
        """The checkpoint files (the import job's inputs)."""
        return [file for _, file in self.checkpoints]

    def arguments(self) -> list[str]:
        """``metalandscape import`` options after the run config."""
        return [
            *(f"--checkpoint={iteration}={file}" for iteration, file in self.checkpoints),
            *(f"--rename={rule}" for rule in self.rename),
            *(f"--drop={rule}" for rule in self.drop),
        ]


@dataclass
class Run:
    """One training run: its key, RunConfig settings, and what is measured on it."""

    key: RunKey
    settings: dict[str, Any]
    kind: str
    epochs: int
    meta_iterations: int  # of its last checkpoint
    metrics: set[str] = field(default_factory=set)
    measured_epochs: set[int] = field(default_factory=set)
    families: list[str] = field(default_factory=list)
    imported: Imported | None = None  # a run trained elsewhere (experiments[].imported)

    @property
    def id(self) -> str:
        """The run id (file names, the ``run`` wildcard)."""
        return self.key.id

    @property
    def scheduling_priority(self) -> int:
        """Snakemake priority of the run's jobs: longest first, so the longest chain starts early.

        Image-classification runs (minutes) before sinusoid runs (seconds); among them, more
        meta-iterations first.
        """
        return 1 + self.meta_iterations if self.kind == "classification" else 0

    def train_arguments(self) -> list[str]:
        """``metalandscape train`` arguments: ``--set key=value`` per setting, sorted by key."""
        arguments = []
        for key in sorted(self.settings):
            arguments += ["--set", f"{key}={yaml_scalar(self.settings[key])}"]
        return arguments

    def import_arguments(self) -> list[str]:
        """``metalandscape import`` arguments: the run config but ``epochs`` (the checkpoints
        count), then the checkpoints and name rules."""
        arguments = []
        for key in sorted(set(self.settings) - {"epochs"}):
            arguments += ["--set", f"{key}={yaml_scalar(self.settings[key])}"]
        return [*arguments, *(self.imported.arguments() if self.imported else [])]

    def epoch_arguments(self) -> list[str]:
        """``--epoch E`` of every measured epoch, in order."""
        return [text for epoch in sorted(self.measured_epochs) for text in ("--epoch", str(epoch))]


@dataclass(frozen=True)
class ScheduledFigure:
    """One figure to draw: its output name (results/figures/<name>.pdf) and source family."""

    name: str
    figure: str
    family: str


@dataclass
class Grid:
    """Everything the workflow schedules, in config order."""

    runs: dict[str, Run]
    families: dict[str, list[str]]
    separate_metrics: frozenset[str]
    figures: dict[str, ScheduledFigure]
    skipped: dict[str, str]
    lockstep: bool = True  # the config's ``lockstep``: train seed groups in one job
    device: str = "auto"  # the config's ``device``
    _groups: dict[str, list[str]] | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # lines to show when the grid is planned

    def lockstep_groups(self) -> dict[str, list[str]]:
        """``{group: [run ids, by seed]}``: runs one job trains in lockstep, those that
        :func:`~metalandscape.lockstep.lockstep_refusal` accepts on the config's device (``auto``
        counts as a CPU): equal but for the seed, at least two, of an algorithm whose registry
        line allows it, narrow enough on a CPU. ``group`` is their run id without
        ``-seed<N>``. Empty when the config's ``lockstep`` is off."""
        if self._groups is None:
            self._groups = {}
            if self.lockstep:
                candidates: dict[str, list[Run]] = {}
                for run in self.runs.values():
                    if run.imported is not None:
                        continue
                    candidates.setdefault(run.id.rsplit("-seed", 1)[0], []).append(run)
                device = "cuda" if self.device == "cuda" else "cpu"
                for group, members in candidates.items():
                    members = sorted(members, key=lambda run: run.key.seed)
                    configs = [resolve_run_config(run.settings) for run in members]
                    if lockstep_refusal(configs, device) is None:
                        self._groups[group] = [run.id for run in members]
        return self._groups

    def lockstep_rules(self) -> dict[tuple[int, ...], list[str]]:
        """``{seeds: [groups]}``: the lockstep groups by their seeds (one workflow rule each)."""
        rules: dict[tuple[int, ...], list[str]] = {}
        for group, run_ids in self.lockstep_groups().items():
            seeds = tuple(self.runs[run_id].key.seed for run_id in run_ids)
            rules.setdefault(seeds, []).append(group)
        return rules

    def has_interventions(self) -> bool:
        """Whether a family holds an intervention run and a run of the algorithm it modifies
        in the same dataset, way and shot (:mod:`metalandscape.interventions`)."""
        for run_ids in self.families.values():
            keys = [self.runs[run_id].key for run_id in run_ids]
            for key in keys:
                reference = ALGORITHMS[key.algorithm].intervention_on
                if reference is not None and any(
                    (other.dataset, other.way, other.shot, other.algorithm)
                    == (key.dataset, key.way, key.shot, reference)
                    for other in keys
                ):
                    return True
        return False

    def solo_run_ids(self) -> list[str]:
        """The runs trained one job each (not in a lockstep group, not imported)."""
        grouped = {run_id for run_ids in self.lockstep_groups().values() for run_id in run_ids}
        return [
            run_id
            for run_id, run in self.runs.items()
            if run_id not in grouped and run.imported is None
        ]

    def imported_run_ids(self) -> list[str]:
        """The runs trained elsewhere, turned into run files by ``metalandscape import``."""
        return [run_id for run_id, run in self.runs.items() if run.imported is not None]

    def group_train_arguments(self, group: str) -> list[str]:
        """``metalandscape train`` arguments of a lockstep group: its runs' ``--set`` pairs
        but the seed, then ``--seeds`` in the order of the rule's outputs."""
        run_ids = self.lockstep_groups()[group]
        arguments = self.runs[run_ids[0]].train_arguments()
        pairs = [
            text
            for key, value in zip(arguments[::2], arguments[1::2], strict=True)
            if not value.startswith("seed=")
            for text in (key, value)
        ]
        return [*pairs, "--seeds", *(str(self.runs[r].key.seed) for r in run_ids)]

    def bundles(self, run_id: str) -> list[tuple[str, ...]]:
        """The metric bundles of a run: each a sorted tuple of metrics measured by one job."""
        metrics = self.runs[run_id].metrics
        shared = tuple(sorted(metrics - self.separate_metrics))
        own = [(name,) for name in sorted(metrics & self.separate_metrics)]
        return ([shared] if shared else []) + own

    def bundle_runs(self) -> dict[tuple[str, ...], list[str]]:
        """``{bundle: [run ids]}``: every distinct bundle and the runs measured with it."""
        found: dict[tuple[str, ...], list[str]] = {}
        for run_id in self.runs:
            for bundle in self.bundles(run_id):
                found.setdefault(bundle, []).append(run_id)
        return found

    def metric_files(self, family: str) -> list[str]:
        """Every metric file of ``family`` (one per run and metric), the aggregate's inputs."""
        return [
            metric_file(run_id, name)
            for run_id in self.families[family]
            for name in sorted(self.runs[run_id].metrics)
        ]

    def data_inputs(self, run_id: str) -> list[str]:
        """The data file or check a run needs before it starts (nothing for generated tasks)."""
        spec = DATASET_REGISTRY[self.runs[run_id].key.dataset]
        if spec.default_path is not None:
            return [spec.default_path]
        if spec.needs_files:
            return [f"results/data/{spec.name}.check.json"]
        return []

    def inspect_arguments(self, dataset: str) -> list[str]:
        """``metalandscape data inspect`` options that read ``dataset`` as its runs do."""
        options = self.data_options(dataset)
        arguments = ["--resize", options.get("resize") or "lanczos"]
        if options.get("image_size"):
            arguments += ["--image-size", *(str(size) for size in options["image_size"])]
        return [*arguments, "--channels", options.get("image_channels") or "auto"]

    def data_options(self, dataset: str) -> dict[str, Any]:
        """The image options (``resize``, ``image_size``, ``image_channels``) of the runs of
        ``dataset``, for its data check; runs that disagree are a GridError."""
        found = {
            json.dumps({k: run.settings.get(k) for k in DATA_OPTION_KEYS}, sort_keys=True)
            for run in self.runs.values()
            if run.key.dataset == dataset
        }
        if len(found) > 1:
            raise GridError(
                f"the experiments on {dataset} read its images in different ways ({sorted(found)}); "
                "give every experiment on one data set the same resize, image_size and "
                "image_channels"
            )
        return json.loads(found.pop()) if found else {}

    def largest_ways(self, dataset: str) -> int:
        """The most ways any run of ``dataset`` asks for (checked against its data's splits)."""
        return max(run.key.way for run in self.runs.values() if run.key.dataset == dataset)


def metric_file(run_id: str, metric: str) -> str:
    """Where one run's measurements of one metric go (every measured epoch in one file)."""
    return f"results/metrics/{run_id}/{metric}.nc"


def bundle_name(bundle: Sequence[str]) -> str:
    """A bundle's name in rule, log and benchmark names: its metrics joined by ``__``."""
    return "__".join(bundle)


def yaml_scalar(value: Any) -> str:
    """A value as the YAML text ``metalandscape train --set key=...`` parses back to it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def data_path(config: Mapping[str, Any], dataset: str) -> str | None:
    """The ``data_path`` a run of ``dataset`` trains on (None for generated tasks): the file the
    workflow builds, or ``data.paths.<dataset>`` (``data.<dataset>_path`` for the two real data
    sets of the paper)."""
    spec = DATASET_REGISTRY[dataset]
    if not spec.needs_files:
        return None
    if spec.default_path is not None:
        return spec.default_path
    data = config.get("data") or {}
    path = (data.get("paths") or {}).get(dataset) or data.get(f"{dataset}_path")
    if not path:
        keys = f"data.{dataset}_path" if f"{dataset}_path" in data else f"data.paths.{dataset}"
        raise GridError(
            f"an experiment uses {dataset} but {keys} is not set; point it at the {dataset} "
            f"folder ({spec.layout_help})"
        )
    return path


def measured_epochs(selection: Any, epochs: int, where: str) -> set[int]:
    """The checkpoint epochs to measure of a run with ``epochs`` epochs (listed epochs past the
    run are left out: :func:`skipped_epochs` says which)."""
    if isinstance(selection, Mapping):
        chosen = set(range(0, epochs + 1, selection["every"])) | {epochs}
    else:
        chosen = {epoch for epoch in selection if epoch <= epochs}
    if not chosen:
        raise GridError(f"{where}: metric_epochs {selection} selects no epoch of 0..{epochs}")
    return chosen


def skipped_epochs(selection: Any, epochs: int) -> list[int]:
    """The epochs a listed ``metric_epochs`` names past a run of ``epochs`` epochs."""
    if isinstance(selection, Mapping):
        return []
    return sorted(epoch for epoch in selection if epoch > epochs)


def check_classes(config: Mapping[str, Any], run: Run, where: str) -> None:
    """Refuse at planning a fontglot run whose ways its class splits cannot supply (the class
    count is in the config; real data sets are checked when their data is read)."""
    if run.key.dataset != "fontglot":
        return
    classes = ((config.get("data") or {}).get("fontglot") or {}).get("classes", 1623)
    sizes = finn_split_sizes(classes) if classes >= 3 else {"train": 0, "val": 0, "test": 0}
    train_classes = run.settings.get("train_classes")
    if train_classes is not None:
        sizes["train"] = min(sizes["train"], train_classes)
    for split in ("train", "test"):
        if run.key.way > sizes[split]:
            raise GridError(
                f"{where}: {run.key.way}-way tasks need {run.key.way} classes but fontglot's "
                f"{split} split has {sizes[split]} (data.fontglot.classes: {classes}); lower "
                "ways or raise data.fontglot.classes"
            )


def registered_metrics() -> set[str]:
    """Names of the metric plugins (entry points ``metalandscape.metrics``)."""
    return {entry.name for entry in entry_points(group="metalandscape.metrics")}


def _check_names(config: Mapping[str, Any], known_metrics: set[str]) -> None:
    """Every algorithm and metric name of ``config`` is registered."""
    for index, group in enumerate(config["experiments"]):
        where = f"experiments[{index}] ({group['dataset']})"
        for name in group["algorithms"]:
            if name not in ALGORITHMS:
                raise GridError(
                    f"{where}: unknown algorithm {name!r} in 'algorithms'; "
                    f"registered: {', '.join(ALGORITHMS)}"
                )
        for name in group["metrics"]:
            if name not in known_metrics:
                raise GridError(
                    f"{where}: unknown metric {name!r} in 'metrics'; "
                    f"available: {', '.join(sorted(known_metrics))}"
                )
        for algorithm in group["algorithms"]:
            for metric in group["metrics"]:
                reason = unsupported_metric_reason(algorithm, metric)
                if reason is not None:
                    raise GridError(
                        f"{where}: algorithm {algorithm!r} cannot be measured with metric "
                        f"{metric!r} ({reason}); list them in separate experiments"
                    )
    for key in ("metrics", "separate_metrics"):
        for name in config.get(key) or ():
            if name not in known_metrics:
                raise GridError(
                    f"unknown metric {name!r} under the top-level {key!r} key; "
                    f"available: {', '.join(sorted(known_metrics))}"
                )


def _runs_of(config: Mapping[str, Any], index: int, group: Mapping[str, Any]) -> list[Run]:
    """The runs of one experiment group, each checked by metalandscape.config."""
    dataset = group["dataset"]
    where = f"experiments[{index}] ({dataset})"
    regression = DATASET_REGISTRY[dataset].kind == "regression"
    ways = group.get("ways", [1] if regression else None)
    if ways is None:
        raise GridError(f"{where}: 'ways' is required for {dataset}")
    if regression and list(ways) != [1]:
        raise GridError(f"{where}: {dataset} regression has ways [1], got {ways}")
    path = data_path(config, dataset)
    variant = group.get("variant", "default")
    imported = _imported_checkpoints(group, where, ways)
    runs = []
    for way in ways:
        for shot in group["shots"]:
            for algorithm in group["algorithms"]:
                for number, seed in enumerate(group["seeds"]):
                    key = RunKey(dataset, variant, int(way), int(shot), algorithm, int(seed))
                    settings = {
                        "dataset": dataset,
                        "algorithm": algorithm,
                        "seed": seed,
                        "variant": variant,
                        "n_way": way,
                        "k_shot": shot,
                        **(group.get("overrides") or {}),
                    }
                    if path is not None:
                        settings["data_path"] = path
                    if imported is not None:
                        settings["epochs"] = len(imported[number]) - 1
                    try:
                        resolved = resolve_run_config(settings)
                    except ConfigError as error:
                        raise GridError(f"{where} run {key.id}: {error}") from None
                    iterations = resolved.checkpoint_iterations()[-1]
                    run = Run(key, settings, resolved.kind, resolved.epochs, iterations)
                    if imported is not None:
                        run.meta_iterations = imported[number][-1][0]
                        run.imported = Imported(
                            tuple(imported[number]),
                            tuple(group["imported"].get("rename", [])),
                            tuple(group["imported"].get("drop", [])),
                        )
                    runs.append(run)
    return runs


def _imported_checkpoints(
    group: Mapping[str, Any], where: str, ways: Sequence[int]
) -> list[list[tuple[int, str]]] | None:
    """Each seed's (meta-iteration, file) checkpoints of an imported experiment (None: the
    experiment trains its runs)."""
    imported = group.get("imported")
    if imported is None:
        return None
    if len(ways) != 1 or len(group["shots"]) != 1 or len(group["algorithms"]) != 1:
        raise GridError(
            f"{where}: an imported experiment is one way, shot and algorithm (its checkpoints are "
            "listed per seed); split it into one experiment per setting"
        )
    lists = imported["checkpoints"]
    if len(lists) != len(group["seeds"]):
        raise GridError(
            f"{where}: imported.checkpoints has {len(lists)} lists but seeds has "
            f"{len(group['seeds'])}; give one list of ITERATION=FILE per seed, in seed order"
        )
    if "epochs" in (group.get("overrides") or {}) or "checkpoints" in (
        group.get("overrides") or {}
    ):
        raise GridError(
            f"{where}: an imported run's checkpoints come from imported.checkpoints; drop "
            "overrides.epochs and overrides.checkpoints"
        )
    parsed = []
    for files in lists:
        try:
            pairs = checked_order(parse_checkpoint_argument(text) for text in files)
        except CheckpointImportError as error:
            raise GridError(f"{where}: imported.checkpoints: {error}") from None
        pairs = [(iteration, str(file)) for iteration, file in pairs]
        missing = [file for _, file in pairs if not Path(file).is_file()]
        if missing:
            raise GridError(
                f"{where}: imported checkpoint {missing[0]} does not exist (paths are relative "
                "to the workflow's folder); fix imported.checkpoints"
            )
        parsed.append(pairs)
    return parsed


def build_runs(
    config: Mapping[str, Any], notes: list[str] | None = None
) -> tuple[dict[str, Run], dict[str, list[str]]]:
    """``({run id: Run}, {family: [run ids]})`` of every experiment group, deduplicated;
    ``notes`` receives a line per run whose listed ``metric_epochs`` go past it."""
    notes = [] if notes is None else notes
    runs: dict[str, Run] = {}
    families: dict[str, list[str]] = {}
    for index, group in enumerate(config["experiments"]):
        where = f"experiments[{index}] ({group['dataset']})"
        family = group.get("family", group["dataset"])
        selection = group.get("metric_epochs", config.get("metric_epochs", {"every": 1}))
        for fresh in _runs_of(config, index, group):
            check_classes(config, fresh, where)
            skipped = skipped_epochs(selection, fresh.epochs)
            if skipped:
                notes.append(
                    f"{where}: run {fresh.id} has {fresh.epochs} epochs; metric_epochs "
                    f"{skipped} skipped"
                )
            run = runs.setdefault(fresh.id, fresh)
            if run.settings != fresh.settings:
                raise GridError(
                    f"{where}: run {run.id} is also in an earlier experiment with other "
                    "overrides; give one of them another variant"
                )
            run.metrics.update(group["metrics"])
            run.measured_epochs |= measured_epochs(selection, run.epochs, where)
            if family not in run.families:
                run.families.append(family)
                families.setdefault(family, []).append(run.id)
    return runs, families


def accuracy_splits(config: Mapping[str, Any]) -> set[str]:
    """The splits the accuracy metric measures (its Settings default: test and train)."""
    settings = (config.get("metrics") or {}).get("accuracy") or {}
    return set(settings.get("splits", ("test", "train")))


def _algorithm_matches(needs: Needs, algorithm: str) -> bool:
    if not needs.roles and not needs.algorithms:
        return True
    return algorithm in needs.algorithms or ALGORITHMS[algorithm].role in needs.roles


def why_not(needs: Needs, runs: Sequence[Run], splits: set[str]) -> str | None:
    """Why ``runs`` cannot supply ``needs`` (the first requirement none meets), or None."""
    if "accuracy" in needs.metrics and not set(needs.accuracy_splits) <= splits:
        lacking = sorted(set(needs.accuracy_splits) - splits)
        return f"metrics.accuracy.splits lacks {lacking}"
    steps = [
        (needs.kind is not None, lambda run: run.kind == needs.kind, f"no {needs.kind} run"),
        (
            bool(needs.roles or needs.algorithms),
            lambda run: _algorithm_matches(needs, run.key.algorithm),
            f"no run of {' or '.join([*needs.roles, *needs.algorithms])}",
        ),
        (
            bool(needs.variants),
            lambda run: run.key.variant in needs.variants,
            f"no run of variant {' or '.join(repr(v) for v in needs.variants)}",
        ),
        (
            True,
            lambda run: set(needs.metrics) <= run.metrics,
            f"no such run measured with {list(needs.metrics)}",
        ),
    ]
    left = list(runs)
    for applies, keep, reason in steps:
        if applies:
            left = [run for run in left if keep(run)]
            if not left:
                return reason
    if needs.together:
        settings: dict[tuple[Any, ...], set[str]] = {}
        for run in left:
            setting = (run.key.dataset, run.key.variant, run.key.way, run.key.shot)
            settings.setdefault(setting, set()).add(run.key.algorithm)
        if not any(set(needs.algorithms) <= found for found in settings.values()):
            return f"no setting with runs of each of {list(needs.algorithms)}"
    return None


def figure_reason(spec: FigureSpec, runs: Sequence[Run], splits: set[str]) -> str | None:
    """Why ``spec`` cannot be drawn from ``runs`` (one family's), or None when it can."""
    reasons = [why_not(needs, runs, splits) for needs in spec.needs]
    if any(reason is None for reason in reasons):
        return None
    return "; or ".join(dict.fromkeys(reason for reason in reasons if reason))


def _figure_registry() -> dict[str, FigureSpec]:
    from metalandscape.figures import FIGURES

    return FIGURES


def schedule_figures(
    config: Mapping[str, Any],
    runs: Mapping[str, Run],
    families: Mapping[str, list[str]],
    registry: Mapping[str, FigureSpec] | None = None,
) -> tuple[dict[str, ScheduledFigure], dict[str, str]]:
    """``({output name: ScheduledFigure}, {figure: skip line})`` of the config's figures."""
    registry = _figure_registry() if registry is None else registry
    splits = accuracy_splits(config)
    instances: list[tuple[str, str]] = []
    skipped: dict[str, str] = {}
    for entry in config.get("figures") or ():
        figure = entry if isinstance(entry, str) else entry["figure"]
        spec = registry.get(figure)
        if spec is None:
            raise GridError(f"figures: unknown figure {figure!r}; known: {', '.join(registry)}")
        if isinstance(entry, str):
            reasons = {}
            for family, run_ids in families.items():
                reason = figure_reason(spec, [runs[r] for r in run_ids], splits)
                if reason is None:
                    instances.append((figure, family))
                else:
                    reasons[family] = reason
            if len(reasons) == len(families):
                reason = figure_reason(spec, list(runs.values()), splits) or "; ".join(
                    f"family {name}: {text}" for name, text in reasons.items()
                )
                skipped[figure] = f"{figure} skipped: {reason}"
            continue
        family = entry["family"]
        if family not in families:
            raise GridError(
                f"figures: {figure} asks for family {family!r}, which no experiment has"
            )
        reason = figure_reason(spec, [runs[r] for r in families[family]], splits)
        if reason is not None:
            raise GridError(f"figures: {figure} cannot be drawn from family {family!r}: {reason}")
        instances.append((figure, family))
    instances = list(dict.fromkeys(instances))
    counts: dict[str, int] = {}
    for figure, _ in instances:
        counts[figure] = counts.get(figure, 0) + 1
    scheduled = {}
    for figure, family in instances:
        name = figure if counts[figure] == 1 else f"{figure}_{family}"
        scheduled[name] = ScheduledFigure(name, figure, family)
    return scheduled, skipped


def build_grid(config: Mapping[str, Any], known_metrics: set[str] | None = None) -> Grid:
    """The grid of a validated workflow config; :class:`GridError` when it is impossible.

    ``known_metrics``: the metric names to accept (default: the registered metric plugins).
    """
    if known_metrics is None:
        known_metrics = registered_metrics()
    _check_names(config, known_metrics)
    notes: list[str] = []
    runs, families = build_runs(config, notes)
    figures, skipped = schedule_figures(config, runs, families)
    separate = frozenset(config.get("separate_metrics") or ())
    lockstep = bool(config.get("lockstep", True))
    device = config.get("device", "auto")
    return Grid(runs, families, separate, figures, skipped, lockstep, device, notes=notes)
