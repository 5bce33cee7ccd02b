"""Run metric plugins on a checkpoint epoch and write one small netCDF file per metric."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
from metalandscape.experiment import make_model, make_task_source
from metalandscape.metrics.base import EvaluationContext, Metric, MetricError, Quantity

RUN_DIMS = ("dataset", "variant", "way", "shot", "algorithm", "seed", "epoch")


def make_context(
    run_path: str | Path,
    epoch: int,
    *,
    device: torch.device | str = "cpu",
    evaluation_seed: int = 0,
    head: HeadMode = "per_task",
    progress: bool = False,
) -> tuple[RunConfig, EvaluationContext]:
    """The run's config and the shared evaluation context at ``epoch``.

    Evaluation tasks come from ``evaluation_seed``, not the run's seed, so every run and epoch is
    measured on the same tasks. The algorithm decides where each task's adaptation starts and
    how it adapts (the finetune baseline: its body and a fresh seeded head, per task unless
    ``head="shared"``).
    """
    info = read_run_info(run_path)
    config = resolve_run_config(info.config)
    source = make_task_source(config)
    params = load_epoch_params(run_path, epoch)
    model = make_model(config, source, for_training=False)
    algorithm = load_algorithm(config.algorithm)
    start = algorithm.evaluation_start(config, params, evaluation_seed, head)
    inner_steps, inner_step_size = algorithm.evaluation_adaptation(config)
    context = EvaluationContext(
        model,
        start.shared,
        TaskSampler(source, evaluation_seed),
        source.kind,
        inner_steps=inner_steps,
        inner_step_size=inner_step_size,
        device=device,
        task_chunk_size=config.task_chunk_size,
        progress=progress,
        task_start=start.per_task,
    )
    return config, context


def run_coordinates(config: RunConfig, epoch: int) -> dict[str, Any]:
    """Length-1 coordinates that place one result in the experiment grid."""
    return {
        "dataset": config.dataset,
        "variant": config.variant,
        "way": config.n_way,
        "shot": config.k_shot,
        "algorithm": config.algorithm,
        "seed": config.seed,
        "epoch": epoch,
    }


def to_dataset(
    metric: Metric,
    quantities: Mapping[str, Quantity],
    config: RunConfig,
    epoch: int,
    run_path: str | Path,
) -> xr.Dataset:
    """Quantities as an xarray Dataset with length-1 run coordinates and CF-style attributes."""
    coordinates = run_coordinates(config, epoch)
    data_vars = {}
    for name, quantity in quantities.items():
        values = np.asarray(quantity.values, dtype=np.float64)
        if quantity.per_task:
            if values.ndim != 1:
                raise MetricError(f"metric {metric.name!r}: per-task {name!r} must be 1-D")
            dims: tuple[str, ...] = (*RUN_DIMS, "task")
            values = values.reshape((1,) * len(RUN_DIMS) + values.shape)
        else:
            if values.ndim != 0:
                raise MetricError(f"metric {metric.name!r}: scalar {name!r} must be 0-D")
            dims = RUN_DIMS
            values = values.reshape((1,) * len(RUN_DIMS))
        attrs = {"long_name": quantity.long_name, "units": quantity.units}
        if quantity.per_task:
            attrs["tasks"] = int(values.shape[-1])
        data_vars[name] = (dims, values, attrs)
    dataset = xr.Dataset(data_vars, coords={k: [v] for k, v in coordinates.items()})
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
    epoch: int,
    metrics: Sequence[Metric],
    *,
    device: torch.device | str = "cpu",
    evaluation_seed: int = 0,
    head: HeadMode = "per_task",
    progress: bool = False,
) -> dict[str, xr.Dataset]:
    """Every metric at one epoch of a run, sharing one evaluation context."""
    config, context = make_context(
        run_path,
        epoch,
        device=device,
        evaluation_seed=evaluation_seed,
        head=head,
        progress=progress,
    )
    results = {}
    for metric in metrics:
        quantities = metric.compute(context)
        results[metric.name] = to_dataset(metric, quantities, config, epoch, run_path)
    return results
