"""Combine per-(run, metric) netCDF files into one Dataset and a tidy CSV table.

Every metric file holds length-1 coordinates :data:`RUN_DIMS`, an ``epoch`` dimension (every
measured epoch) and per-task variables on a ``task`` dimension; a variable may end in further
dimensions with coordinates (an eigenvalue grid, layer names), which must be the same in every
file. The aggregate places each value at its run coordinates on the union grid (NaN where a
combination was not measured) and renames each metric's ``task`` dimension to ``task_<metric>``,
since metrics evaluate different numbers of tasks.

Files are read with h5py when they follow the netCDF-4 layout that h5netcdf writes (about 30
times faster than xarray for many small files) and with ``xarray`` (engine ``h5netcdf``)
otherwise; both leave no file open.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import xarray as xr

from metalandscape.atomic import atomic_output
from metalandscape.metrics import GRID_DIMS
from metalandscape.runs import RUN_DIMS

log = logging.getLogger(__name__)

TABLE_COLUMNS = (*GRID_DIMS, "variable", "value")
_NETCDF_BOOKKEEPING = frozenset(
    {
        "CLASS",
        "DIMENSION_LIST",
        "NAME",
        "REFERENCE_LIST",
        "_FillValue",
        "_NCProperties",
        "_Netcdf4Coordinates",
        "_Netcdf4Dimid",
    }
)
# Attributes that make xarray change values on reading: such files take the xarray path.
_DECODING_ATTRIBUTES = frozenset(
    {"scale_factor", "add_offset", "_Unsigned", "missing_value", "calendar", "_Encoding", "dtype"}
)
# Per-file bookkeeping that means nothing once files are combined.
_DROPPED_VARIABLE_ATTRIBUTES = frozenset({"tasks", "coordinates"})
#: The coordinate along ``epoch`` holding each checkpoint's meta-iteration count; in the
#: aggregate a coordinate over GRID_DIMS (runs may have different checkpoint schedules).
ITERATION = "iteration"
_PHONY_DIMENSION = "This is a netCDF dimension but not a netCDF variable"


class AggregateError(ValueError):
    """A metric file or aggregate the user gave cannot be read or combined."""


@dataclass(frozen=True)
class _RawFile:
    """What one netCDF file holds, reader-independent."""

    attrs: dict[str, Any]
    coords: dict[str, np.ndarray]
    variables: dict[str, tuple[tuple[str, ...], np.ndarray, dict[str, Any]]]


@dataclass(frozen=True)
class MetricFile:
    """One epoch of a checked metric file: its grid coordinates and its variables' values."""

    path: Path
    metric: str
    settings: str
    run: tuple[Any, ...]  # values of GRID_DIMS
    scalars: dict[str, float]
    per_task: dict[str, np.ndarray]  # [task, *extra dims]
    variable_attrs: dict[str, dict[str, Any]]
    shaped: dict[str, np.ndarray] = field(default_factory=dict)  # no task dim: [*extra dims]
    extra_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)  # variable: its extras
    extra_coords: dict[str, np.ndarray] = field(default_factory=dict)
    iteration: float = np.nan  # meta-iterations done at the checkpoint (NaN: not recorded)


class _NotPlainLayout(Exception):
    """The file needs xarray's general reader."""


def _python_value(value: Any) -> Any:
    if isinstance(value, bytes | np.bytes_):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.size == 1:
            return _python_value(value.reshape(()).item())
        return [_python_value(item) for item in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _read_plain(path: Path) -> _RawFile:
    """Read a flat netCDF-4 file written by h5netcdf straight through h5py."""
    with h5py.File(path, "r") as handle:
        file_attrs = handle.attrs
        attrs = {
            key: _python_value(file_attrs[key])
            for key in file_attrs
            if key not in _NETCDF_BOOKKEEPING
        }
        dimension_names: dict[int, str] = {}
        coords: dict[str, np.ndarray] = {}
        datasets: list[tuple[str, h5py.Dataset, Any, set[str]]] = []
        for name, item in handle.items():
            if not isinstance(item, h5py.Dataset):
                raise _NotPlainLayout
            item_attrs = item.attrs
            keys = set(item_attrs)
            if keys & _DECODING_ATTRIBUTES:
                raise _NotPlainLayout
            if "CLASS" in keys and _python_value(item_attrs["CLASS"]) == "DIMENSION_SCALE":
                if "_Netcdf4Dimid" not in keys:
                    raise _NotPlainLayout
                dimension_names[int(item_attrs["_Netcdf4Dimid"])] = name
                if not str(_python_value(item_attrs.get("NAME", ""))).startswith(_PHONY_DIMENSION):
                    coords[name] = _read_values(item)
            else:
                datasets.append((name, item, item_attrs, keys))
        variables = {}
        for name, item, item_attrs, keys in datasets:
            if "_Netcdf4Coordinates" not in keys:
                raise _NotPlainLayout
            if "_FillValue" in keys and not _is_nan_fill(item_attrs["_FillValue"]):
                raise _NotPlainLayout
            try:
                dims = tuple(
                    dimension_names[int(i)]
                    for i in np.atleast_1d(item_attrs["_Netcdf4Coordinates"])
                )
            except KeyError:
                raise _NotPlainLayout from None
            if len(dims) != item.ndim:
                raise _NotPlainLayout
            variable_attrs = {
                key: _python_value(item_attrs[key])
                for key in keys - _NETCDF_BOOKKEEPING - _DROPPED_VARIABLE_ATTRIBUTES
            }
            variables[name] = (dims, _read_values(item), variable_attrs)
    return _RawFile(attrs, coords, variables)


def _is_nan_fill(fill: Any) -> bool:
    values = np.asarray(fill)
    return values.dtype.kind == "f" and bool(np.isnan(values).all())


def _read_values(item: h5py.Dataset) -> np.ndarray:
    if h5py.check_string_dtype(item.dtype) is not None:
        return np.asarray(item.asstr()[...], dtype=object)
    if item.dtype.kind not in "biuf":
        raise _NotPlainLayout
    return np.asarray(item[...])


def _read_general(path: Path) -> _RawFile:
    """Read any netCDF file xarray's h5netcdf engine understands."""
    with xr.open_dataset(path, engine="h5netcdf") as opened:
        dataset = opened.load()
    coords = {name: coord.values for name, coord in dataset.coords.items() if coord.ndim == 1}
    variables = {
        str(name): (tuple(map(str, data.dims)), data.values, dict(data.attrs))
        for name, data in dataset.data_vars.items()
    }
    return _RawFile(dict(dataset.attrs), coords, variables)


def _read_file(path: Path) -> _RawFile:
    if not path.is_file():
        raise AggregateError(f"metric file {path} not found")
    try:
        return _read_plain(path)
    except (_NotPlainLayout, OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return _read_general(path)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise AggregateError(f"{path} is not a readable netCDF file: {error}") from None


def _check_metric_file(path: Path, raw: _RawFile) -> list[MetricFile]:
    """One record per epoch of the metric file, or AggregateError if it is not what
    :func:`metalandscape.metrics.evaluate.to_dataset` writes."""
    metric = raw.attrs.get("metric")
    if not isinstance(metric, str) or not metric:
        raise AggregateError(f"{path} is not a metric file: it has no 'metric' attribute")
    run = []
    for dim in RUN_DIMS:
        values = raw.coords.get(dim)
        if values is None or values.shape != (1,):
            found = "missing" if values is None else f"of length {values.size}"
            raise AggregateError(
                f"{path} is not a metric file: coordinate {dim!r} is {found}, expected length 1"
            )
        run.append(_python_value(values[0]))
    epochs = raw.coords.get("epoch")
    if epochs is None or epochs.ndim != 1 or epochs.size == 0:
        raise AggregateError(f"{path} is not a metric file: it has no 'epoch' coordinate")
    scalars: dict[str, np.ndarray] = {}
    per_task: dict[str, np.ndarray] = {}
    shaped: dict[str, np.ndarray] = {}
    extra_dims: dict[str, tuple[str, ...]] = {}
    extra_coords: dict[str, np.ndarray] = {}
    variable_attrs = {}
    iterations = np.full(epochs.size, np.nan)
    for name, (dims, values, attrs) in raw.variables.items():
        if name == ITERATION and dims == ("epoch",):
            iterations = np.asarray(values, dtype=np.float64).reshape(epochs.size)
            continue
        if np.asarray(values).dtype.kind not in "biuf":
            raise AggregateError(f"{path}: variable {name!r} is not numeric")
        values = np.asarray(values, dtype=np.float64)
        rest = dims[len(GRID_DIMS) :]
        has_task = bool(rest) and rest[0] == "task"
        extra = rest[1:] if has_task else rest
        if dims[: len(GRID_DIMS)] != GRID_DIMS or {"task", *GRID_DIMS} & set(extra):
            raise AggregateError(
                f"{path}: variable {name!r} has dimensions {dims}, expected {GRID_DIMS} "
                "optionally followed by 'task', then any other dimensions"
            )
        for axis, dim in enumerate(extra, start=len(dims) - len(extra)):
            coordinate = raw.coords.get(dim)
            if coordinate is None or coordinate.shape != (values.shape[axis],):
                raise AggregateError(
                    f"{path}: dimension {dim!r} of variable {name!r} has no coordinate of its "
                    "length"
                )
            extra_coords[dim] = coordinate
        if extra:
            extra_dims[name] = extra
        if has_task:
            per_task[name] = values.reshape(epochs.size, *values.shape[len(GRID_DIMS) :])
        elif extra:
            shaped[name] = values.reshape(epochs.size, *values.shape[len(GRID_DIMS) :])
        else:
            scalars[name] = values.reshape(epochs.size)
        variable_attrs[name] = {
            k: v for k, v in attrs.items() if k not in _DROPPED_VARIABLE_ATTRIBUTES
        }
    if not scalars and not per_task and not shaped:
        raise AggregateError(f"{path} is not a metric file: it has no variables")
    settings = str(raw.attrs.get("metric_settings", "{}"))
    return [
        MetricFile(
            path,
            metric,
            settings,
            (*run, _python_value(epoch)),
            {name: float(values[row]) for name, values in scalars.items()},
            {name: values[row] for name, values in per_task.items()},
            variable_attrs,
            {name: values[row] for name, values in shaped.items()},
            extra_dims,
            extra_coords,
            float(iterations[row]),
        )
        for row, epoch in enumerate(epochs)
    ]


def read_metric_file(path: str | Path) -> list[MetricFile]:
    """One checked metric file, one record per epoch, data in memory and the file closed."""
    path = Path(path)
    return _check_metric_file(path, _read_file(path))


def _sorted_levels(dim: str, values: set[Any]) -> list[Any]:
    try:
        return sorted(values)
    except TypeError:
        raise AggregateError(
            f"coordinate {dim!r} mixes value types: {sorted(map(repr, values))}"
        ) from None


def _coordinate_array(levels: list[Any]) -> np.ndarray:
    if all(isinstance(level, str) for level in levels):
        return np.array(levels, dtype=str)
    return np.array(levels)


def _settings_by_metric(files: Sequence[MetricFile]) -> dict[str, list[Any]]:
    settings: dict[str, set[str]] = {}
    for file in files:
        settings.setdefault(file.metric, set()).add(file.settings)
    out: dict[str, list[Any]] = {}
    for metric in sorted(settings):
        out[metric] = []
        for text in sorted(settings[metric]):
            try:
                out[metric].append(json.loads(text))
            except json.JSONDecodeError:
                out[metric].append(text)
    return out


def combine_metric_files(
    files: Sequence[MetricFile], *, include_per_task: bool = True
) -> xr.Dataset:
    """Place checked metric files on the union grid of their run coordinates (NaN elsewhere)."""
    if not files:
        raise AggregateError("no metric files to aggregate")
    seen: dict[tuple[str, tuple[Any, ...]], Path] = {}
    owner: dict[str, str] = {}
    owner_file: dict[str, Path] = {}
    is_per_task: dict[str, bool] = {}
    extra_of: dict[str, tuple[str, ...]] = {}
    extra_coords: dict[str, tuple[np.ndarray, Path]] = {}
    for file in files:
        key = (file.metric, file.run)
        if key in seen:
            run = ", ".join(f"{d}={v}" for d, v in zip(GRID_DIMS, file.run))
            raise AggregateError(
                f"{seen[key]} and {file.path} both hold metric {file.metric!r} for {run}"
            )
        seen[key] = file.path
        for dim, coordinate in file.extra_coords.items():
            known, known_path = extra_coords.setdefault(dim, (coordinate, file.path))
            if known.shape != coordinate.shape or not np.array_equal(known, coordinate):
                raise AggregateError(
                    f"coordinate {dim!r} differs between {known_path} and {file.path}: "
                    "measure them with the same settings"
                )
        for name, per_task in [(n, False) for n in [*file.scalars, *file.shaped]] + [
            (n, True) for n in file.per_task
        ]:
            extra = file.extra_dims.get(name, ())
            if extra_of.setdefault(name, extra) != extra:
                raise AggregateError(
                    f"variable {name!r} has dimensions {extra_of[name]} after the run's in "
                    f"{owner_file[name]} but {extra} in {file.path}"
                )
            if owner.setdefault(name, file.metric) != file.metric:
                raise AggregateError(
                    f"variable {name!r} comes from metric {owner[name]!r} ({owner_file[name]}) "
                    f"and metric {file.metric!r} ({file.path})"
                )
            owner_file.setdefault(name, file.path)
            if is_per_task.setdefault(name, per_task) != per_task:
                raise AggregateError(
                    f"variable {name!r} is per-task in some files and scalar in others "
                    f"(e.g. {owner_file[name]} and {file.path})"
                )
    levels = {
        dim: _sorted_levels(dim, {file.run[i] for file in files}) for i, dim in enumerate(GRID_DIMS)
    }
    positions = {dim: {level: i for i, level in enumerate(levels[dim])} for dim in GRID_DIMS}
    cells = [
        tuple(positions[dim][value] for dim, value in zip(GRID_DIMS, file.run)) for file in files
    ]
    grid_shape = tuple(len(levels[dim]) for dim in GRID_DIMS)
    coords: dict[str, Any] = {dim: _coordinate_array(levels[dim]) for dim in GRID_DIMS}
    data_vars: dict[str, Any] = {}
    attrs_of: dict[str, dict[str, Any]] = {}
    for file in files:
        for name, attrs in file.variable_attrs.items():
            attrs_of.setdefault(name, {**attrs, "metric": file.metric})
    for dim, (coordinate, _) in extra_coords.items():
        coords[dim] = _coordinate_array(list(coordinate))
    task_counts: dict[str, int] = {}
    for file in files:
        for vector in file.per_task.values():
            task_counts[file.metric] = max(task_counts.get(file.metric, 0), vector.shape[0])
    for name in sorted(owner, key=lambda n: (owner[n], n)):
        extra = extra_of[name]
        extra_shape = tuple(coords[dim].size for dim in extra)
        if is_per_task[name]:
            if not include_per_task:
                continue
            task_dim = f"task_{owner[name]}"
            tasks = task_counts[owner[name]]
            coords[task_dim] = np.arange(tasks)
            values = np.full((*grid_shape, tasks, *extra_shape), np.nan)
            for file, cell in zip(files, cells):
                vector = file.per_task.get(name)
                if vector is not None:
                    values[(*cell, slice(0, vector.shape[0]))] = vector
            data_vars[name] = ((*GRID_DIMS, task_dim, *extra), values, attrs_of[name])
        elif extra:
            values = np.full((*grid_shape, *extra_shape), np.nan)
            for file, cell in zip(files, cells):
                if name in file.shaped:
                    values[cell] = file.shaped[name]
            data_vars[name] = ((*GRID_DIMS, *extra), values, attrs_of[name])
        else:
            holders = [
                (cell, file.scalars[name])
                for file, cell in zip(files, cells)
                if name in file.scalars
            ]
            values = np.full(grid_shape, np.nan)
            values[tuple(np.array([cell for cell, _ in holders]).T)] = [v for _, v in holders]
            data_vars[name] = (GRID_DIMS, values, attrs_of[name])
    iteration = np.full(grid_shape, np.nan)
    for file, cell in zip(files, cells):
        if np.isfinite(file.iteration):
            iteration[cell] = file.iteration
    if np.isfinite(iteration).any():
        coords[ITERATION] = (
            GRID_DIMS,
            iteration,
            {"long_name": "meta-training iterations done at the checkpoint", "units": "1"},
        )
    dataset = xr.Dataset(data_vars, coords=coords)
    dataset.attrs.update(
        {
            "title": "metalandscape metric aggregate",
            "metrics": json.dumps(sorted({file.metric for file in files})),
            "metric_settings": json.dumps(_settings_by_metric(files), sort_keys=True),
            "source_files": len(files),
        }
    )
    return dataset


def aggregate(paths: Sequence[str | Path], *, include_per_task: bool = True) -> xr.Dataset:
    """One Dataset over GRID_DIMS (+ ``task_<metric>``, + extra dims) from many metric files."""
    if not paths:
        raise AggregateError("no metric files to aggregate")
    files = [record for path in paths for record in read_metric_file(path)]
    dataset = combine_metric_files(files, include_per_task=include_per_task)
    dataset.attrs["source_files"] = len(paths)
    return dataset


def tidy_table(dataset: xr.Dataset) -> pd.DataFrame:
    """Long table of the scalar variables: GRID_DIMS, ``variable``, ``value``; no NaN rows."""
    frames = []
    for name, data in dataset.data_vars.items():
        if set(data.dims) != set(GRID_DIMS):
            continue
        series = data.transpose(*GRID_DIMS).to_series().dropna()
        if series.empty:
            continue
        frame = series.rename("value").reset_index()
        frame.insert(len(GRID_DIMS), "variable", str(name))
        frames.append(frame)
    if not frames:
        return pd.DataFrame({column: [] for column in TABLE_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(TABLE_COLUMNS)]


def write_aggregate(
    dataset: xr.Dataset, nc_path: str | Path, csv_path: str | Path
) -> tuple[Path, Path]:
    """Write the aggregate (h5netcdf, gzip) and its tidy table (CSV), each whole or not at all."""
    nc_path, csv_path = Path(nc_path), Path(csv_path)
    table = tidy_table(dataset)
    encoding = {name: {"zlib": True, "complevel": 4} for name in dataset.data_vars}
    # Built in memory, written with plain file I/O: HDF5 writing to a full disk crashes at exit.
    data = dataset.to_netcdf(engine="h5netcdf", encoding=encoding)
    with atomic_output(nc_path) as nc_temporary, atomic_output(csv_path) as csv_temporary:
        nc_temporary.write_bytes(data)
        table.to_csv(csv_temporary, index=False)
    return nc_path, csv_path


def load_aggregate(path: str | Path) -> xr.Dataset:
    """An aggregate written by :func:`write_aggregate`, in memory, its file closed."""
    path = Path(path)
    if not path.is_file():
        raise AggregateError(f"aggregate file {path} not found")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as opened:
            dataset = opened.load()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
        raise AggregateError(f"{path} is not a readable netCDF file: {error}") from None
    missing = [dim for dim in GRID_DIMS if dim not in dataset.dims]
    if missing:
        raise AggregateError(f"{path} is not a metric aggregate: it lacks dimensions {missing}")
    return dataset


def read_input_list(path: str | Path) -> list[Path]:
    """Paths listed one per line in ``path`` (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise AggregateError(f"cannot read input list {path}: {error.strerror}") from None
    return [Path(line.strip()) for line in lines if line.strip() and not line.startswith("#")]


def command_aggregate(args: argparse.Namespace) -> int:
    """``metalandscape aggregate``: combine metric files into one .nc and a tidy .csv."""
    paths = [Path(p) for p in args.inputs or []]
    for listing in args.inputs_from or []:
        paths.extend(read_input_list(listing))
    if not paths:
        raise AggregateError("aggregate needs --inputs FILE... or --inputs-from LIST.txt")
    started = time.perf_counter()
    dataset = aggregate(paths, include_per_task=not args.scalars_only)
    nc_path = Path(args.out)
    csv_path = Path(args.csv) if args.csv else nc_path.with_suffix(".csv")
    write_aggregate(dataset, nc_path, csv_path)
    sizes = ", ".join(f"{dim}={size}" for dim, size in dataset.sizes.items())
    log.info(
        "aggregated %d files in %.1f s into %s and %s (%s)",
        len(paths),
        time.perf_counter() - started,
        nc_path,
        csv_path,
        sizes,
    )
    return 0


__all__ = [
    "GRID_DIMS",
    "TABLE_COLUMNS",
    "AggregateError",
    "MetricFile",
    "aggregate",
    "combine_metric_files",
    "command_aggregate",
    "load_aggregate",
    "read_input_list",
    "read_metric_file",
    "tidy_table",
    "write_aggregate",
]
