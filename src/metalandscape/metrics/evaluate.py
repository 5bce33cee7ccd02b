"""Measure a run's checkpoint epochs with metric plugins: one netCDF per metric, all epochs in it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from metalandscape.algorithms import HeadMode, load_algorithm
from metalandscape.atomic import write_netcdf_atomically
from metalandscape.checkpoints import load_epoch_params, read_run_info
from metalandscape.config import RunConfig, resolve_run_config
from metalandscape.data.tasks import TaskSampler
from metalandscape.devices import task_chunk_size
from metalandscape.experiment import make_model, make_task_source
from metalandscape.metrics import GRID_DIMS
from metalandscape.metrics.base import EvaluationContext, Metric, MetricError, Quantity
from metalandscape.runs import RunKey

ITERATION_ATTRS = {"long_name": "meta-training iterations done at the checkpoint", "units": "1"}


def make_context(
    run_path: str | Path,
    epoch: int,
    *,
    device: torch.device | str = "cpu",
    evaluation_seed: int = 0,
    head: HeadMode = "per_task",
    progress: bool = False,
    carried: dict[str, Any] | None = None,
    start_gradient_tasks: Mapping[str, int] | None = None,
) -> tuple[RunConfig, EvaluationContext]:
    """The run's config and the shared evaluation context at ``epoch``.

    Evaluation tasks come from ``evaluation_seed``, not the run's seed, so every run and epoch is
    measured on the same tasks. The algorithm decides where each task's adaptation starts and
    how it adapts (the finetune baseline: its body and a fresh seeded head, per task unless
    ``head="shared"``).
    ``carried`` is the context's :attr:`~EvaluationContext.carried` state from the previous
    measured epoch (warm starts); ``start_gradient_tasks`` what the metrics will ask of
    :meth:`~EvaluationContext.start_gradients`.
    """
    info = read_run_info(run_path)
    config = resolve_run_config(info.config)
    source = make_task_source(config)
    params = load_epoch_params(run_path, epoch)
    model = make_model(config, source, for_training=False)
    algorithm = load_algorithm(config.algorithm)
    start = algorithm.evaluation_start(config, params, evaluation_seed, head)
    inner_steps, inner_step_size = algorithm.evaluation_adaptation(config, params)
    context = EvaluationContext(
        model,
        start.shared,
        TaskSampler(source, evaluation_seed),
        source.kind,
        inner_steps=inner_steps,
        inner_step_size=inner_step_size,
        device=device,
        task_chunk_size=task_chunk_size(config.task_chunk_size, device),
        progress=progress,
        task_start=start.per_task,
        carried=carried,
        start_gradient_tasks=start_gradient_tasks,
        adaptation_options=algorithm.evaluation_adaptation_options(config),
    )
    return config, context


def to_dataset(
    metric: Metric,
    measured: Mapping[int, Mapping[str, Quantity]],
    config: RunConfig,
    run_path: str | Path,
    iterations: Sequence[int] | None = None,
) -> xr.Dataset:
    """``{epoch: quantities}`` as one Dataset over :data:`GRID_DIMS` (+ ``task``), CF attributes.

    The six run coordinates have length 1, ``epoch`` holds every measured epoch in order, and
    the coordinate ``iteration`` along ``epoch`` the meta-iterations done at each checkpoint.
    Per-task variables of epochs with fewer tasks are NaN-padded. A quantity's ``extra_dims``
    become trailing dimensions (after ``task``) with their coordinates; they must be the same
    at every epoch.
    """
    epochs = sorted(measured)
    names = _quantity_names(metric, measured, epochs)
    data_vars = {}
    extra_coords: dict[str, np.ndarray] = {}
    for name in names:
        extra = _extra_coordinates(metric, name, measured, epochs)
        for dim, coordinate in extra.items():
            if dim in extra_coords and not np.array_equal(extra_coords[dim], coordinate):
                raise MetricError(
                    f"metric {metric.name!r}: two variables disagree on coordinate {dim!r}"
                )
            extra_coords[dim] = coordinate
        data_vars[name] = _variable(metric, name, [measured[e][name] for e in epochs], extra)
    coords: dict[str, Any] = {k: [v] for k, v in RunKey.of(config).coordinates().items()}
    coords["epoch"] = epochs
    coords.update(extra_coords)
    if iterations is None:
        iterations = config.checkpoint_iterations()
    coords["iteration"] = ("epoch", [iterations[epoch] for epoch in epochs], ITERATION_ATTRS)
    dataset = xr.Dataset(data_vars, coords=coords)
    if "task" in dataset.dims:
        dataset = dataset.assign_coords(task=np.arange(dataset.sizes["task"]))
    dataset.attrs.update(
        {
            "metric": metric.name,
            "metric_settings": json.dumps(_settings_dict(metric), sort_keys=True),
            "checkpoint": str(run_path),
            "run_config": config.to_json(),
        }
    )
    return dataset


def _quantity_names(
    metric: Metric, measured: Mapping[int, Mapping[str, Quantity]], epochs: list[int]
) -> list[str]:
    """The quantity names every epoch returned, in order; MetricError if epochs disagree."""
    if not epochs:
        raise MetricError(f"metric {metric.name!r}: no epoch measured")
    names = list(measured[epochs[0]])
    for epoch in epochs:
        if list(measured[epoch]) != names:
            raise MetricError(
                f"metric {metric.name!r}: epoch {epoch} returned {list(measured[epoch])}, "
                f"epoch {epochs[0]} returned {names}"
            )
    return names


def _extra_coordinates(
    metric: Metric, name: str, measured: Mapping[int, Mapping[str, Quantity]], epochs: list[int]
) -> dict[str, np.ndarray]:
    """Quantity ``name``'s extra dimensions and coordinates, the same at every epoch."""
    extra = {
        dim: np.asarray(values)
        for dim, values in (measured[epochs[0]][name].extra_dims or {}).items()
    }
    for epoch in epochs:
        other = measured[epoch][name].extra_dims or {}
        if list(other) != list(extra) or any(
            not np.array_equal(np.asarray(other[dim]), extra[dim]) for dim in extra
        ):
            raise MetricError(
                f"metric {metric.name!r}: {name!r} has other extra coordinates at epoch "
                f"{epoch} than at epoch {epochs[0]}"
            )
    return extra


def _variable(
    metric: Metric, name: str, per_epoch: list[Quantity], extra: Mapping[str, np.ndarray]
) -> tuple[tuple[str, ...], np.ndarray, dict[str, Any]]:
    """Quantity ``name`` at every epoch as one variable: dims, values (NaN-padded), attributes."""
    first = per_epoch[0]
    expected = tuple(len(coordinate) for coordinate in extra.values())
    columns = [np.asarray(quantity.values, dtype=np.float64) for quantity in per_epoch]
    if first.per_task:
        if any(c.ndim != 1 + len(extra) or c.shape[1:] != expected for c in columns):
            raise MetricError(
                f"metric {metric.name!r}: per-task {name!r} must be [task, *{expected}]"
            )
        tasks = max(column.shape[0] for column in columns)
        values = np.full((len(columns), tasks, *expected), np.nan)
        for row, column in enumerate(columns):
            values[row, : column.shape[0]] = column
        dims: tuple[str, ...] = (*GRID_DIMS, "task", *extra)
    else:
        if any(column.shape != expected for column in columns):
            raise MetricError(f"metric {metric.name!r}: {name!r} must have shape {expected}")
        values = np.stack(columns) if columns else np.empty((0, *expected))
        dims = (*GRID_DIMS, *extra)
    values = values.reshape((1,) * (len(GRID_DIMS) - 1) + values.shape)
    attrs: dict[str, Any] = {"long_name": first.long_name, "units": first.units}
    if first.per_task:
        attrs["tasks"] = int(values.shape[len(GRID_DIMS)])
    return dims, values, attrs


def _settings_dict(metric: Metric) -> dict[str, Any]:
    try:
        return asdict(metric.settings)
    except TypeError:
        return {}


def write_netcdf(dataset: xr.Dataset, path: str | Path) -> Path:
    """Write ``dataset`` to ``path`` (h5netcdf) whole or not at all."""
    return write_netcdf_atomically(dataset, path)


def evaluate(
    run_path: str | Path,
    epochs: int | Iterable[int],
    metrics: Sequence[Metric],
    *,
    device: torch.device | str = "cpu",
    evaluation_seed: int = 0,
    head: HeadMode = "per_task",
    progress: bool = False,
) -> dict[str, xr.Dataset]:
    """Every metric at every epoch of a run: ``{metric name: Dataset over its epochs}``.

    Epochs are walked in increasing order with one :class:`EvaluationContext` per epoch shared by
    all metrics (each task adapted once per epoch), its ``carried`` state handed to the next
    epoch's context (warm starts of eigensolves).
    """
    wanted = sorted({int(epochs)} if isinstance(epochs, int) else {int(e) for e in epochs})
    names = [metric.name for metric in metrics]
    if len(set(names)) != len(names):
        raise MetricError(f"each metric may be asked for once, got {names}")
    measured: dict[str, dict[int, Mapping[str, Quantity]]] = {name: {} for name in names}
    carried: dict[str, Any] = {}
    start_gradient_tasks: dict[str, int] = {}
    for metric in metrics:
        for split, count in metric.start_gradient_tasks().items():
            start_gradient_tasks[split] = max(count, start_gradient_tasks.get(split, 0))
    config = None
    for epoch in wanted:
        config, context = make_context(
            run_path,
            epoch,
            device=device,
            evaluation_seed=evaluation_seed,
            head=head,
            progress=progress,
            carried=carried,
            start_gradient_tasks=start_gradient_tasks,
        )
        for metric in metrics:
            measured[metric.name][epoch] = metric.compute(context)
        carried = context.carried
    if config is None:
        raise MetricError("no epoch to measure")
    results = {
        metric.name: to_dataset(
            metric, measured[metric.name], config, run_path, read_run_info(run_path).iterations
        )
        for metric in metrics
    }
    for dataset in results.values():
        dataset.attrs["evaluation_head"] = head
    return results
