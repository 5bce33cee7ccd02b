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

from metalandscape.algorithms.finetune import replace_head
from metalandscape.atomic import atomic_output
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
    progress: bool = False,
) -> tuple[RunConfig, EvaluationContext]:
    """The run's config and the shared evaluation context at ``epoch``.

    Evaluation tasks come from ``evaluation_seed``, not the run's seed, so every run and epoch is
    measured on the same tasks. The finetune baseline is evaluated from its body and a fresh
    n-way Xavier head seeded by ``evaluation_seed``.
    """
    info = read_run_info(run_path)
    config = resolve_run_config(info.config)
    source = make_task_source(config)
    params = load_epoch_params(run_path, epoch)
    model = make_model(config, source, for_training=False)
    if config.algorithm == "finetune" and config.kind == "classification":
        params = replace_head(params, config.n_way, seed=evaluation_seed)
    assert config.inner_steps is not None and config.inner_step_size is not None
    context = EvaluationContext(
        model,
        params,
        TaskSampler(source, evaluation_seed),
        source.kind,
        inner_steps=config.inner_steps,
        inner_step_size=config.inner_step_size,
        device=device,
        task_chunk_size=config.task_chunk_size,
        progress=progress,
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
        extra = dict(quantity.extra_dims or {})
        expected = tuple(len(coordinate) for coordinate in extra.values())
        if quantity.per_task:
            if values.ndim != 1 + len(extra) or values.shape[1:] != expected:
                raise MetricError(
                    f"metric {metric.name!r}: per-task {name!r} must be [task, *{expected}]"
                )
            dims: tuple[str, ...] = (*RUN_DIMS, "task", *extra)
        else:
            if values.shape != expected:
                raise MetricError(f"metric {metric.name!r}: {name!r} must have shape {expected}")
            dims = (*RUN_DIMS, *extra)
        values = values.reshape((1,) * len(RUN_DIMS) + values.shape)
        for dim, coordinate in extra.items():
            coordinates[dim] = np.asarray(coordinate)
        attrs = {"long_name": quantity.long_name, "units": quantity.units}
        if quantity.per_task:
            attrs["tasks"] = int(values.shape[len(RUN_DIMS)])
        data_vars[name] = (dims, values, attrs)
    dataset = xr.Dataset(
        data_vars,
        coords={k: [v] if k in RUN_DIMS else v for k, v in coordinates.items()},
    )
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
    with atomic_output(path) as temporary:
        dataset.to_netcdf(temporary, engine="h5netcdf")
    return Path(path)


def evaluate(
    run_path: str | Path,
    epoch: int,
    metrics: Sequence[Metric],
    *,
    device: torch.device | str = "cpu",
    evaluation_seed: int = 0,
    progress: bool = False,
) -> dict[str, xr.Dataset]:
    """Every metric at one epoch of a run, sharing one evaluation context."""
    config, context = make_context(
        run_path, epoch, device=device, evaluation_seed=evaluation_seed, progress=progress
    )
    results = {}
    for metric in metrics:
        quantities = metric.compute(context)
        results[metric.name] = to_dataset(metric, quantities, config, epoch, run_path)
    return results
