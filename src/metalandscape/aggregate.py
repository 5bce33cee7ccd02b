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
#: The run's inner-loop step size α and step count T, written by the hessian metric beside λmax.
INNER_STEP_SIZE, INNER_STEPS = "inner_step_size", "inner_steps"


def normalized_sharpness(
    dataset: xr.Dataset, variable: str = "hessian_top_eigenvalue_mean"
) -> xr.DataArray | None:
    """α·λ/2 of ``variable``: 1 on the 2/α line, above which gradient descent with step α cannot
    settle; None when the Dataset lacks ``variable`` or α."""
    if variable not in dataset or INNER_STEP_SIZE not in dataset:
        return None
    normalized = dataset[INNER_STEP_SIZE] * dataset[variable] / 2
    return normalized.rename(f"normalized_{variable}").assign_attrs(
        long_name=f"alpha * {dataset[variable].attrs.get('long_name', variable)} / 2", units="1"
    )


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
            variable_attrs = {  # in the file's order: a set's order would change the bytes
                key: _python_value(item_attrs[key])
                for key in item_attrs
                if key not in _NETCDF_BOOKKEEPING and key not in _DROPPED_VARIABLE_ATTRIBUTES
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


@dataclass
class _Variables:
    """A metric file's variables, sorted by kind, each with a leading ``epoch`` axis."""

    epochs: int
    scalars: dict[str, np.ndarray] = field(default_factory=dict)
    per_task: dict[str, np.ndarray] = field(default_factory=dict)
    shaped: dict[str, np.ndarray] = field(default_factory=dict)
    extra_dims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra_coords: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    iterations: np.ndarray = field(init=False)  # NaN: not recorded

    def __post_init__(self) -> None:
        self.iterations = np.full(self.epochs, np.nan)

    def add(self, path: Path, raw: _RawFile, name: str) -> None:
        """Check variable ``name`` of ``raw`` and file it under its kind."""
        dims, values, attrs = raw.variables[name]
        if name == ITERATION and dims == ("epoch",):
            self.iterations = np.asarray(values, dtype=np.float64).reshape(self.epochs)
            return
        if np.asarray(values).dtype.kind not in "biuf":
            raise AggregateError(f"{path}: variable {name!r} is not numeric")
        values = np.asarray(values, dtype=np.float64)
        has_task, extra = _trailing_dims(path, name, dims)
        for axis, dim in enumerate(extra, start=len(dims) - len(extra)):
            coordinate = raw.coords.get(dim)
            if coordinate is None or coordinate.shape != (values.shape[axis],):
                raise AggregateError(
                    f"{path}: dimension {dim!r} of variable {name!r} has no coordinate of its "
                    "length"
                )
            self.extra_coords[dim] = coordinate
        if extra:
            self.extra_dims[name] = extra
        by_epoch = values.reshape(self.epochs, *values.shape[len(GRID_DIMS) :])
        kind = self.per_task if has_task else self.shaped if extra else self.scalars
        kind[name] = by_epoch
        self.attrs[name] = {k: v for k, v in attrs.items() if k not in _DROPPED_VARIABLE_ATTRIBUTES}


def _trailing_dims(path: Path, name: str, dims: tuple[str, ...]) -> tuple[bool, tuple[str, ...]]:
    """Whether a variable has a ``task`` dimension, and its dimensions after that (or GRID_DIMS)."""
    rest = dims[len(GRID_DIMS) :]
    has_task = bool(rest) and rest[0] == "task"
    extra = rest[1:] if has_task else rest
    if dims[: len(GRID_DIMS)] != GRID_DIMS or {"task", *GRID_DIMS} & set(extra):
        raise AggregateError(
            f"{path}: variable {name!r} has dimensions {dims}, expected {GRID_DIMS} "
            "optionally followed by 'task', then any other dimensions"
        )
    return has_task, extra


def _metric_name(path: Path, raw: _RawFile) -> str:
    """The file's ``metric`` attribute."""
    metric = raw.attrs.get("metric")
    if not isinstance(metric, str) or not metric:
        raise AggregateError(f"{path} is not a metric file: it has no 'metric' attribute")
    return metric


def _run_values(path: Path, raw: _RawFile) -> list[Any]:
    """The file's value of each RUN_DIMS coordinate (each of length 1)."""
    run = []
    for dim in RUN_DIMS:
        values = raw.coords.get(dim)
        if values is None or values.shape != (1,):
            found = "missing" if values is None else f"of length {values.size}"
            raise AggregateError(
                f"{path} is not a metric file: coordinate {dim!r} is {found}, expected length 1"
            )
        run.append(_python_value(values[0]))
    return run


def _epochs(path: Path, raw: _RawFile) -> np.ndarray:
    """The file's ``epoch`` coordinate (one dimension, not empty)."""
    epochs = raw.coords.get("epoch")
    if epochs is None or epochs.ndim != 1 or epochs.size == 0:
        raise AggregateError(f"{path} is not a metric file: it has no 'epoch' coordinate")
    return epochs


def _check_metric_file(path: Path, raw: _RawFile) -> list[MetricFile]:
    """One record per epoch of the metric file, or AggregateError if it is not what
    :func:`metalandscape.metrics.evaluate.to_dataset` writes."""
    metric = _metric_name(path, raw)
    run = _run_values(path, raw)
    epochs = _epochs(path, raw)
    variables = _Variables(epochs.size)
    for name in raw.variables:
        variables.add(path, raw, name)
    if not variables.scalars and not variables.per_task and not variables.shaped:
        raise AggregateError(f"{path} is not a metric file: it has no variables")
    settings = str(raw.attrs.get("metric_settings", "{}"))
    return [
        MetricFile(
            path,
            metric,
            settings,
            (*run, _python_value(epoch)),
            {name: float(values[row]) for name, values in variables.scalars.items()},
            {name: values[row] for name, values in variables.per_task.items()},
            variables.attrs,
            {name: values[row] for name, values in variables.shaped.items()},
            variables.extra_dims,
            variables.extra_coords,
            float(variables.iterations[row]),
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


@dataclass
class _Layout:
    """What the metric files must agree on, checked file by file."""

    seen: dict[tuple[str, tuple[Any, ...]], Path] = field(default_factory=dict)
    owner: dict[str, str] = field(default_factory=dict)  # variable: its metric
    owner_file: dict[str, Path] = field(default_factory=dict)
    is_per_task: dict[str, bool] = field(default_factory=dict)
    extra_of: dict[str, tuple[str, ...]] = field(default_factory=dict)
    extra_coords: dict[str, tuple[np.ndarray, Path]] = field(default_factory=dict)

    def add(self, file: MetricFile) -> None:
        """Check ``file`` against the files added before it."""
        self._add_run(file)
        self._add_extra_coords(file)
        for name in [*file.scalars, *file.shaped]:
            self._add_variable(file, name, per_task=False)
        for name in file.per_task:
            self._add_variable(file, name, per_task=True)

    def _add_run(self, file: MetricFile) -> None:
        key = (file.metric, file.run)
        if key in self.seen:
            run = ", ".join(f"{d}={v}" for d, v in zip(GRID_DIMS, file.run))
            raise AggregateError(
                f"{self.seen[key]} and {file.path} both hold metric {file.metric!r} for {run}"
            )
        self.seen[key] = file.path

    def _add_extra_coords(self, file: MetricFile) -> None:
        for dim, coordinate in file.extra_coords.items():
            known, known_path = self.extra_coords.setdefault(dim, (coordinate, file.path))
            if known.shape != coordinate.shape or not np.array_equal(known, coordinate):
                raise AggregateError(
                    f"coordinate {dim!r} differs between {known_path} and {file.path}: "
                    "measure them with the same settings"
                )

    def _add_variable(self, file: MetricFile, name: str, per_task: bool) -> None:
        extra = file.extra_dims.get(name, ())
        if self.extra_of.setdefault(name, extra) != extra:
            raise AggregateError(
                f"variable {name!r} has dimensions {self.extra_of[name]} after the run's in "
                f"{self.owner_file[name]} but {extra} in {file.path}"
            )
        if self.owner.setdefault(name, file.metric) != file.metric:
            raise AggregateError(
                f"variable {name!r} comes from metric {self.owner[name]!r} "
                f"({self.owner_file[name]}) and metric {file.metric!r} ({file.path})"
            )
        self.owner_file.setdefault(name, file.path)
        if self.is_per_task.setdefault(name, per_task) != per_task:
            raise AggregateError(
                f"variable {name!r} is per-task in some files and scalar in others "
                f"(e.g. {self.owner_file[name]} and {file.path})"
            )


@dataclass(frozen=True)
class _Grid:
    """The union grid of the files' run coordinates, and each file's cell on it."""

    files: Sequence[MetricFile]
    cells: list[tuple[int, ...]]
    shape: tuple[int, ...]
    coords: dict[str, Any]  # GRID_DIMS first; the other coordinates are added as they come

    @staticmethod
    def of(files: Sequence[MetricFile]) -> _Grid:
        """The grid of ``files``: every level of each of GRID_DIMS that some file holds."""
        levels = {
            dim: _sorted_levels(dim, {file.run[i] for file in files})
            for i, dim in enumerate(GRID_DIMS)
        }
        positions = {dim: {level: i for i, level in enumerate(levels[dim])} for dim in GRID_DIMS}
        cells = [
            tuple(positions[dim][value] for dim, value in zip(GRID_DIMS, file.run))
            for file in files
        ]
        shape = tuple(len(levels[dim]) for dim in GRID_DIMS)
        coords: dict[str, Any] = {dim: _coordinate_array(levels[dim]) for dim in GRID_DIMS}
        return _Grid(files, cells, shape, coords)

    def per_task_values(self, name: str, tasks: int, extra_shape: tuple[int, ...]) -> np.ndarray:
        """``[*GRID_DIMS, task, *extra]``: each file's tasks first, NaN after and elsewhere."""
        values = np.full((*self.shape, tasks, *extra_shape), np.nan)
        for file, cell in zip(self.files, self.cells):
            vector = file.per_task.get(name)
            if vector is not None:
                values[(*cell, slice(0, vector.shape[0]))] = vector
        return values

    def shaped_values(self, name: str, extra_shape: tuple[int, ...]) -> np.ndarray:
        """``[*GRID_DIMS, *extra]``, NaN where no file holds ``name``."""
        values = np.full((*self.shape, *extra_shape), np.nan)
        for file, cell in zip(self.files, self.cells):
            if name in file.shaped:
                values[cell] = file.shaped[name]
        return values

    def scalar_values(self, name: str) -> np.ndarray:
        """``[*GRID_DIMS]``, NaN where no file holds ``name``."""
        holders = [
            (cell, file.scalars[name])
            for file, cell in zip(self.files, self.cells)
            if name in file.scalars
        ]
        values = np.full(self.shape, np.nan)
        values[tuple(np.array([cell for cell, _ in holders]).T)] = [v for _, v in holders]
        return values

    def iteration_values(self) -> np.ndarray:
        """Each checkpoint's meta-iteration count, NaN where not recorded."""
        iteration = np.full(self.shape, np.nan)
        for file, cell in zip(self.files, self.cells):
            if np.isfinite(file.iteration):
                iteration[cell] = file.iteration
        return iteration


def _data_variables(
    files: Sequence[MetricFile], layout: _Layout, grid: _Grid, include_per_task: bool
) -> dict[str, Any]:
    """Every variable on the grid, by metric then name; adds each ``task_<metric>`` coordinate."""
    attrs_of: dict[str, dict[str, Any]] = {}
    for file in files:
        for name, attrs in file.variable_attrs.items():
            attrs_of.setdefault(name, {**attrs, "metric": file.metric})
    task_counts: dict[str, int] = {}
    for file in files:
        for vector in file.per_task.values():
            task_counts[file.metric] = max(task_counts.get(file.metric, 0), vector.shape[0])
    data_vars: dict[str, Any] = {}
    for name in sorted(layout.owner, key=lambda n: (layout.owner[n], n)):
        extra = layout.extra_of[name]
        extra_shape = tuple(grid.coords[dim].size for dim in extra)
        if layout.is_per_task[name]:
            if not include_per_task:
                continue
            task_dim = f"task_{layout.owner[name]}"
            tasks = task_counts[layout.owner[name]]
            grid.coords[task_dim] = np.arange(tasks)
            values = grid.per_task_values(name, tasks, extra_shape)
            data_vars[name] = ((*GRID_DIMS, task_dim, *extra), values, attrs_of[name])
        elif extra:
            values = grid.shaped_values(name, extra_shape)
            data_vars[name] = ((*GRID_DIMS, *extra), values, attrs_of[name])
        else:
            data_vars[name] = (GRID_DIMS, grid.scalar_values(name), attrs_of[name])
    return data_vars


def combine_metric_files(
    files: Sequence[MetricFile], *, include_per_task: bool = True
) -> xr.Dataset:
    """Place checked metric files on the union grid of their run coordinates (NaN elsewhere)."""
    if not files:
        raise AggregateError("no metric files to aggregate")
    layout = _Layout()
    for file in files:
        layout.add(file)
    grid = _Grid.of(files)
    for dim, (coordinate, _) in layout.extra_coords.items():
        grid.coords[dim] = _coordinate_array(list(coordinate))
    data_vars = _data_variables(files, layout, grid, include_per_task)
    iteration = grid.iteration_values()
    if np.isfinite(iteration).any():
        grid.coords[ITERATION] = (
            GRID_DIMS,
            iteration,
            {"long_name": "meta-training iterations done at the checkpoint", "units": "1"},
        )
    dataset = xr.Dataset(data_vars, coords=grid.coords)
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
    "INNER_STEPS",
    "INNER_STEP_SIZE",
    "TABLE_COLUMNS",
    "AggregateError",
    "MetricFile",
    "aggregate",
    "combine_metric_files",
    "command_aggregate",
    "load_aggregate",
    "normalized_sharpness",
    "read_input_list",
    "read_metric_file",
    "tidy_table",
    "write_aggregate",
]
