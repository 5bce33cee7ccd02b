"""``metalandscape plan``: the workflow's jobs and how long they will take on this device.

The config is read as Snakemake reads it (config.yaml, each ``--configfile`` merged over it with
:func:`snakemake.utils.update_config`, then the schema check with its defaults), and
:func:`metalandscape.grid.build_grid` lists the runs and metric bundles. The estimate comes from
a probe: for each distinct training setting (a run's settings without seed, variant and epoch
counts) a few meta-iterations are timed after one warm-up step, and one epoch of each metric
is measured on the untrained parameters with a few tasks and twice as many, extrapolated
linearly to the configured tasks. On a CPU the probes count this process's CPU time, so a busy
machine does not inflate them (with one thread: the wall time of a job on a free core); on a GPU,
wall time. A run's training time is seconds per iteration × epochs × iterations per epoch; its
metric time is seconds per measured epoch × measured epochs, per bundle. Where a data set is
missing (say Omniglot for the paper preset) the probe uses random images of the same shape and
says so: its speed depends on shapes, not pixels.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metalandscape.grid import Grid, Run, build_grid

SCHEMA = Path("workflow") / "schemas" / "config.schema.yaml"
#: Settings that change how many iterations a run has, not what one costs.
COUNT_SETTINGS = ("seed", "variant", "epochs", "iterations_per_epoch")
#: Settings that change how many examples a task holds: within one class of settings (all else
#: equal) a probe's time is interpolated linearly in examples per task (``--probe-limit``).
SIZE_SETTINGS = ("n_way", "k_shot", "query")
#: Shape of one random stand-in image per data set: (classes per split, samples, *image).
FAKE_IMAGES: dict[str, tuple[int, ...]] = {
    "fontglot": (40, 20, 28, 28),
    "omniglot": (40, 20, 28, 28),
    "miniimagenet": (20, 40, 84, 84, 3),
}


class PlanError(ValueError):
    """The config files cannot be read or describe no grid."""


def workflow_config(base: str | Path, presets: Sequence[str | Path]) -> dict[str, Any]:
    """config.yaml with each preset merged over it and the schema's defaults, as Snakemake does."""
    from snakemake.utils import update_config, validate

    base = Path(base)
    config: dict[str, Any] = {}
    for path in (base, *map(Path, presets)):
        if not path.is_file():
            raise PlanError(f"config file {path} not found (run plan in the workflow's folder)")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise PlanError(f"config file {path} is not valid YAML: {error}") from None
        if not isinstance(loaded, dict):
            raise PlanError(f"config file {path} must hold a mapping")
        update_config(config, loaded)
    schema = base.parent / SCHEMA
    try:
        validate(config, str(schema))
    except Exception as error:  # snakemake's WorkflowError carries the schema's message
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise PlanError(f"config does not pass {schema}: {first}") from None
    from metalandscape.metrics.schema import ConfigSchemaError, validate_config

    try:  # the metrics' settings, as the workflow checks them when it is parsed
        validate_config(config, schema)
    except ConfigSchemaError as error:
        raise PlanError(f"config does not pass {schema}: {error}") from None
    return config


def cost_key(run: Run) -> str:
    """What decides the cost of one meta-iteration: the settings without counts and seed."""
    return json.dumps(
        {k: v for k, v in run.settings.items() if k not in COUNT_SETTINGS}, sort_keys=True
    )


def distinct_settings(runs: Sequence[Run]) -> dict[str, Run]:
    """The first run of each distinct setting (:func:`cost_key`), in the runs' order."""
    settings: dict[str, Run] = {}
    for run in runs:
        settings.setdefault(cost_key(run), run)
    return settings


def size_class(run: Run) -> str:
    """The settings that stay fixed when only the task's size (ways, shots, queries) changes."""
    skip = (*COUNT_SETTINGS, *SIZE_SETTINGS)
    return json.dumps({k: v for k, v in run.settings.items() if k not in skip}, sort_keys=True)


def examples_per_task(run: Run) -> int:
    """Support plus query examples of one task of ``run`` (its config's defaults applied)."""
    from metalandscape.config import resolve_run_config

    config = resolve_run_config({**run.settings, "epochs": 0})
    return config.n_way * (int(config.k_shot or 1) + int(config.query or 0))


def choose_probes(runs: Sequence[Run], limit: int | None) -> list[Run]:
    """One run per distinct setting to probe; with ``limit``, at most that many.

    Under a limit, each size class gets its largest task first, then its smallest, then (round
    by round) the middle of its widest unprobed stretch, until the limit is spent. A limit
    below the number of size classes is an error: a class without a probe has no estimate.
    """
    settings = distinct_settings(runs)
    if limit is None or limit >= len(settings):
        return list(settings.values())
    classes: dict[str, list[tuple[int, Run]]] = {}
    for run in settings.values():
        classes.setdefault(size_class(run), []).append((examples_per_task(run), run))
    if limit < len(classes):
        raise PlanError(
            f"--probe-limit {limit} is below the {len(classes)} classes of settings this grid "
            f"needs (one probe each: data set, algorithm, inner steps, ...); use at least "
            f"{len(classes)}"
        )
    members = {
        name: sorted(entries, key=lambda entry: entry[0]) for name, entries in classes.items()
    }
    chosen = {name: [len(entries) - 1] for name, entries in members.items()}  # the largest
    budget = limit - len(chosen)
    for name, entries in members.items():  # then the smallest
        if budget and len(entries) > 1:
            chosen[name].append(0)
            budget -= 1
    while budget:
        gaps = {name: _widest_gap(chosen[name]) for name in members}
        if not any(index is not None for index in gaps.values()):
            break
        for name, index in gaps.items():
            if budget and index is not None:
                chosen[name].append(index)
                budget -= 1
    return [members[name][index][1] for name in members for index in sorted(chosen[name])]


def _widest_gap(taken: Sequence[int]) -> int | None:
    """The unprobed index in the middle of the widest stretch between probed ones, if any."""
    marks = sorted(taken)
    best: tuple[int, int] | None = None
    for low, high in itertools.pairwise(marks):
        if high - low > 1 and (best is None or high - low > best[1] - best[0]):
            best = (low, high)
    return None if best is None else (best[0] + best[1]) // 2


def fill_in_probes(runs: Sequence[Run], probes: Mapping[str, Probe]) -> dict[str, Probe]:
    """Every distinct setting's probe: measured, or interpolated within its size class.

    Between two probed task sizes the seconds are interpolated linearly in examples per task;
    beyond the probed range the nearest probe is used (an upper bound below the largest probe,
    which :func:`choose_probes` always takes).
    """
    filled = dict(probes)
    measured: dict[str, list[tuple[int, Probe]]] = {}
    settings = distinct_settings(runs)
    for key, run in settings.items():
        if key in probes:
            measured.setdefault(size_class(run), []).append((examples_per_task(run), probes[key]))
    for key, run in settings.items():
        points = sorted(measured.get(size_class(run), []), key=lambda point: point[0])
        if key in filled or not points:
            continue
        size = examples_per_task(run)
        below = [point for point in points if point[0] <= size]
        above = [point for point in points if point[0] >= size]
        if not below or not above:
            filled[key] = (below or above)[-1 if below else 0][1]
            continue
        (low, first), (high, second) = below[-1], above[0]
        weight = 0.0 if high == low else (size - low) / (high - low)
        filled[key] = Probe(
            (1 - weight) * first.seconds_per_iteration + weight * second.seconds_per_iteration,
            {
                bundle: (1 - weight) * first.seconds_per_epoch.get(bundle, 0.0)
                + weight * second.seconds_per_epoch.get(bundle, 0.0)
                for bundle in {*first.seconds_per_epoch, *second.seconds_per_epoch}
            },
        )
    return filled


@dataclass
class Probe:
    """Seconds per meta-iteration and per measured epoch of each bundle, for one setting."""

    seconds_per_iteration: float
    seconds_per_epoch: dict[tuple[str, ...], float] = field(default_factory=dict)


@dataclass
class FamilyEstimate:
    """The jobs and estimated seconds of one run family (runs counted in their first family)."""

    family: str
    runs: int = 0
    metric_jobs: int = 0
    measured_epochs: int = 0
    iterations: int = 0
    train_seconds: float = 0.0
    metric_seconds: float = 0.0


def _missing_data(run: Run) -> bool:
    path = run.settings.get("data_path")
    return path is not None and not Path(path).exists()


def _fake_splits(dataset: str, options: Any = None, seed: int = 0) -> dict[str, Any]:
    """Random images of the data set's shape (other data sets: RGB, ``image_size`` or 84×84)."""
    import numpy as np

    from metalandscape.data.tasks import ClassImages

    size = getattr(options, "image_size", None) or (84, 84)
    shape = FAKE_IMAGES.get(dataset, (20, 40, *size, 3))
    rng = np.random.default_rng(seed)
    return {
        split: ClassImages(
            images=rng.integers(0, 256, size=shape, dtype=np.uint8),
            class_names=tuple(f"{split}{index}" for index in range(shape[0])),
        )
        for split in ("train", "val", "test")
    }


@contextmanager
def stand_in_data(datasets: set[str]) -> Iterator[None]:
    """While open, runs of ``datasets`` read random images of their data set's shape."""
    from metalandscape import experiment

    real = experiment.load_class_images

    def load(dataset: str, path: str, options: Any) -> Any:
        if dataset in datasets:
            return _fake_splits(dataset, options)
        return real(dataset, path, options)

    experiment.load_class_images = load  # type: ignore[assignment]
    try:
        yield
    finally:
        experiment.load_class_images = real


def probe_run(
    run: Run,
    bundles: Sequence[tuple[str, ...]],
    metric_settings: Mapping[str, Any],
    *,
    iterations: int,
    probe_tasks: int,
    device: Any,
    evaluation_seed: int,
    folder: Path,
) -> Probe:
    """Time ``iterations`` meta-iterations of ``run``'s setting and one epoch of each bundle.

    Each metric is measured alone (:func:`metric_seconds`); in the workflow a bundle shares one
    adaptation per task, so the metric estimate errs on the long side.
    """
    from metalandscape.algorithms import load_algorithm
    from metalandscape.config import resolve_run_config
    from metalandscape.experiment import initial_params, make_model, make_task_source
    from metalandscape.training import train_run

    config = resolve_run_config({**run.settings, "epochs": 0})
    source = make_task_source(config)
    model = make_model(config, source).to(device)
    params = {name: value.to(device) for name, value in initial_params(model).items()}
    learner = load_algorithm(config.algorithm).learner(config, model, params, source, device)
    learner.train_step(0)  # warm-up: first-call allocations
    clock = device_clock(device)
    started = clock()
    for iteration in range(1, iterations + 1):
        learner.train_step(iteration)
    probe = Probe((clock() - started) / iterations)
    if bundles:
        checkpoint = train_run(config, folder / f"{run.id}.h5", device=device, progress=False)
        for bundle in bundles:
            probe.seconds_per_epoch[bundle] = sum(
                metric_seconds(
                    checkpoint,
                    name,
                    metric_settings.get(name) or {},
                    probe_tasks,
                    device=device,
                    evaluation_seed=evaluation_seed,
                )
                for name in bundle
            )
    return probe


def device_clock(device: Any) -> Callable[[], float]:
    """The probes' clock: this process's CPU time on a CPU (what a job on a free core of this
    machine would take, however busy the machine is now); wall time after a synchronize on a
    GPU, whose kernels run asynchronously."""
    if getattr(device, "type", str(device)) != "cuda":
        return time.process_time

    import torch

    def wall() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()

    return wall


def metric_seconds(
    checkpoint: Path,
    name: str,
    settings: Mapping[str, Any],
    probe_tasks: int,
    *,
    device: Any,
    evaluation_seed: int,
) -> float:
    """Estimated seconds of one epoch of metric ``name`` with its configured tasks.

    With more tasks than ``probe_tasks`` configured, the epoch is timed on ``probe_tasks`` and
    on twice as many tasks, and the line through both (fixed cost + cost per task) is
    extrapolated to the configured count; otherwise the epoch is timed as configured.
    """
    from metalandscape.metrics.base import make_metric
    from metalandscape.metrics.evaluate import evaluate

    clock = device_clock(device)

    def timed(chosen: Mapping[str, Any]) -> float:
        metric = make_metric(name, dict(chosen))
        started = clock()
        evaluate(checkpoint, [0], [metric], device=device, evaluation_seed=evaluation_seed)
        return clock() - started

    small, scale = probe_settings(settings, probe_tasks)
    if scale == 1.0:
        return timed(settings)
    tasks = int(settings["tasks"])
    few = timed(small)
    more_tasks = min(2 * probe_tasks, tasks)
    more = timed({**small, "tasks": more_tasks})
    per_task = max((more - few) / (more_tasks - probe_tasks), 0.0)
    fixed = max(few - per_task * probe_tasks, 0.0)
    return fixed + per_task * tasks


def probe_settings(settings: Mapping[str, Any], probe_tasks: int) -> tuple[dict[str, Any], float]:
    """A metric's settings with at most ``probe_tasks`` tasks, and the configured tasks over
    the probe's (1.0 when the configured count is probed as is)."""
    tasks = settings.get("tasks")
    if not isinstance(tasks, int) or tasks <= probe_tasks:
        return dict(settings), 1.0
    return {**settings, "tasks": probe_tasks}, tasks / probe_tasks


def estimate(
    grid: Grid, probes: Mapping[str, Probe], families: Sequence[str]
) -> list[FamilyEstimate]:
    """Per family: its runs, metric jobs and estimated seconds (each run counted once)."""
    rows = {family: FamilyEstimate(family) for family in families}
    for run in grid.runs.values():
        row = rows[run.families[0]]
        probe = probes.get(cost_key(run))
        bundles = grid.bundles(run.id)
        row.runs += 1
        row.metric_jobs += len(bundles)
        row.measured_epochs += len(run.measured_epochs) * len(bundles)
        # runs trained elsewhere (imported) cost their metrics only
        iterations = 0 if run.imported is not None else run.meta_iterations
        row.iterations += iterations
        if probe is not None:
            row.train_seconds += probe.seconds_per_iteration * iterations
            row.metric_seconds += sum(
                probe.seconds_per_epoch.get(bundle, 0.0) * len(run.measured_epochs)
                for bundle in bundles
            )
    return list(rows.values())


def duration(seconds: float) -> str:
    """``3 d 04:05:06``, ``04:05:06``, ``05:06`` or, under a minute, ``4.2 s``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}" if hours or days else f"{minutes:02d}:{secs:02d}"
    return f"{days} d {text}" if days else text


def job_lines(grid: Grid) -> list[str]:
    """The workflow's jobs, per kind."""
    bundles = sum(len(grid.bundles(run_id)) for run_id in grid.runs)
    data = sorted({run.settings["dataset"] for run in grid.runs.values()} & {"fontglot"})
    lines = ["jobs:"]
    lines.append(f"  data       {len(data):5d}  {', '.join(data) or '-'}")
    imported = len(grid.imported_run_ids())
    trained = len(grid.runs) - imported
    lines.append(f"  train      {trained:5d}  one per run (seeds in lockstep share a job)")
    if imported:
        lines.append(f"  import     {imported:5d}  one per run trained elsewhere")
    lines.append(f"  metrics    {bundles:5d}  one per (run, metric bundle)")
    lines.append(f"  aggregate  {len(grid.families):5d}  {', '.join(grid.families)}")
    lines.append(f"  figure     {len(grid.figures):5d}  {', '.join(sorted(grid.figures))}")
    lines.append("  claims         1")
    lines.extend(f"  {reason}" for reason in grid.skipped.values())
    return lines


def estimate_lines(rows: Sequence[FamilyEstimate], note: str) -> list[str]:
    """The estimate table and its total, each column as wide as its widest cell."""
    train = sum(row.train_seconds for row in rows)
    metrics = sum(row.metric_seconds for row in rows)
    cells = [["family", "runs", "metric jobs", "iterations", "train", "metrics", "total"]]
    for row in rows:
        seconds = (row.train_seconds, row.metric_seconds, row.train_seconds + row.metric_seconds)
        cells.append(
            [row.family, f"{row.runs}", f"{row.metric_jobs}", f"{row.iterations:,}"]
            + [duration(value) for value in seconds]
        )
    cells.append(
        [
            "total",
            f"{sum(r.runs for r in rows)}",
            f"{sum(r.metric_jobs for r in rows)}",
            f"{sum(r.iterations for r in rows):,}",
        ]
        + [duration(value) for value in (train, metrics, train + metrics)]
    )
    widths = [max(len(line[column]) for line in cells) for column in range(len(cells[0]))]
    lines = [note]
    for line in cells:
        first = line[0].ljust(widths[0])
        rest = "  ".join(cell.rjust(width) for cell, width in zip(line[1:], widths[1:]))
        lines.append(f"{first}  {rest}")
    lines.append(
        "Times are one job after another on one device; with --cores N (or N GPUs) divide "
        "roughly by N. Data, aggregate, figure and claims jobs take seconds to minutes and are "
        "not included."
    )
    return lines


def command_plan(args: argparse.Namespace) -> int:
    """``metalandscape plan``: print the jobs, then (unless ``--no-probe``) the estimate."""
    config = workflow_config(args.base_config, args.configfile)
    grid = build_grid(config)
    print(f"config: {' + '.join([*args.configfile, args.base_config])}")
    print("\n".join(job_lines(grid)))
    if args.no_probe:
        return 0
    from metalandscape.devices import keep_freed_memory, resolve_device, set_threads

    set_threads(args.threads)
    keep_freed_memory()
    device = resolve_device(args.device)
    runs = list(grid.runs.values())
    chosen = choose_probes(runs, args.probe_limit)
    class_bundles: dict[str, set[tuple[str, ...]]] = {}
    for run in runs:
        class_bundles.setdefault(size_class(run), set()).update(grid.bundles(run.id))
    stand_in = {run.settings["dataset"] for run in chosen if _missing_data(run)}
    probes: dict[str, Probe] = {}
    started = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="metalandscape-plan-") as folder,
        stand_in_data(stand_in),
    ):
        for index, run in enumerate(chosen, 1):
            print(f"probing setting {index}/{len(chosen)}: {run.id}", flush=True)
            probes[cost_key(run)] = probe_run(
                run,
                sorted(class_bundles[size_class(run)]),
                config.get("metrics") or {},
                iterations=args.probe_iterations,
                probe_tasks=args.probe_tasks,
                device=device,
                evaluation_seed=int(config.get("evaluation_seed", 0)),
                folder=Path(folder),
            )
    distinct = len(distinct_settings(runs))
    probes = fill_in_probes(runs, probes)
    note = (
        f"estimate on {device} with {args.threads} thread(s), from {len(chosen)} probed "
        f"of {distinct} distinct setting(s)"
        + (
            " (the others interpolated in examples per task within their class)"
            if len(chosen) < distinct
            else ""
        )
        + f", {args.probe_iterations} iteration(s) each + one metric epoch on "
        f"{args.probe_tasks} and {2 * args.probe_tasks} tasks per metric, extrapolated to the "
        "configured tasks "
        f"(probe took {duration(time.perf_counter() - started)})"
    )
    if stand_in:
        note += (
            f"; {', '.join(sorted(stand_in))} not found: probed on random images of the same shape"
        )
    print("\n".join(estimate_lines(estimate(grid, probes, list(grid.families)), note)))
    return 0
