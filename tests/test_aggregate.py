"""Aggregating per-(run, epoch, metric) netCDF files: grid, renamed task dims, errors, CSV, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from metalandscape import aggregate as aggregate_module
from metalandscape.aggregate import (
    TABLE_COLUMNS,
    AggregateError,
    aggregate,
    load_aggregate,
    tidy_table,
    write_aggregate,
)
from metalandscape.cli import build_parser
from metalandscape.config import resolve_run_config
from metalandscape.metrics import GRID_DIMS
from metalandscape.metrics.base import Quantity, make_metric
from metalandscape.metrics.evaluate import to_dataset, write_netcdf
from metalandscape.runs import RUN_DIMS

ALGORITHMS = ("maml", "fomaml")
SEEDS = (0, 1)
EPOCHS = (0, 1, 2)
HESSIAN_TASKS = 3
ACCURACY_TASKS = 5
# Left out on purpose: the hessian of fomaml, seed 1, epoch 2.
MISSING = ("hessian", "fomaml", 1, 2)


def accuracy_value(algorithm: str, seed: int, epoch: int, task: int) -> float:
    return 0.1 * epoch + 0.01 * seed + 0.001 * task + (0.5 if algorithm == "maml" else 0.0)


def hessian_value(algorithm: str, seed: int, epoch: int, task: int) -> float:
    return 10.0 * epoch + seed + 0.1 * task + (100.0 if algorithm == "maml" else 0.0)


def write_metric_file(
    directory: Path,
    metric_name: str,
    algorithm: str,
    seed: int,
    epochs: tuple[int, ...],
    *,
    tasks: int,
    value,
    settings: dict | None = None,
) -> Path:
    """One (run, metric) file over ``epochs`` exactly as ``metalandscape metrics`` writes it."""
    config = resolve_run_config(
        {"dataset": "fontglot", "algorithm": algorithm, "seed": seed, "n_way": 5, "k_shot": 1}
    )
    metric = make_metric(metric_name, settings or {"tasks": tasks})
    measured = {}
    for epoch in epochs:
        values = np.array([value(algorithm, seed, epoch, task) for task in range(tasks)])
        if metric_name == "accuracy":
            measured[epoch] = {
                "test_target_accuracy": Quantity(values, "meta-test target accuracy", "1", True),
                "test_target_accuracy_mean": Quantity(values.mean(), "mean accuracy"),
            }
        else:
            measured[epoch] = {
                "hessian_top_eigenvalue": Quantity(values, "top eigenvalue", "1", True),
                "hessian_top_eigenvalue_mean": Quantity(values.mean(), "mean top eigenvalue"),
                "hessian_converged": Quantity(np.ones(tasks), "converged", "1", True),
            }
    dataset = to_dataset(metric, measured, config, f"runs/{algorithm}_{seed}.h5")
    return write_netcdf(dataset, directory / f"{algorithm}-seed{seed}" / f"{metric_name}.nc")


@pytest.fixture(scope="module")
def metric_files(tmp_path_factory) -> list[Path]:
    directory = tmp_path_factory.mktemp("metrics")
    paths = []
    for algorithm in ALGORITHMS:
        for seed in SEEDS:
            paths.append(
                write_metric_file(
                    directory,
                    "accuracy",
                    algorithm,
                    seed,
                    EPOCHS,
                    tasks=ACCURACY_TASKS,
                    value=accuracy_value,
                )
            )
            epochs = tuple(e for e in EPOCHS if ("hessian", algorithm, seed, e) != MISSING)
            paths.append(
                write_metric_file(
                    directory,
                    "hessian",
                    algorithm,
                    seed,
                    epochs,
                    tasks=HESSIAN_TASKS,
                    value=hessian_value,
                )
            )
    return paths


@pytest.fixture(scope="module")
def aggregated(metric_files) -> xr.Dataset:
    return aggregate(metric_files)


def test_grid_dims_are_the_run_dims_then_epoch():
    assert (*RUN_DIMS, "epoch") == aggregate_module.GRID_DIMS


def test_one_file_per_run_and_metric_holds_every_epoch(metric_files):
    with xr.open_dataset(metric_files[0], engine="h5netcdf") as dataset:
        assert dataset["epoch"].values.tolist() == list(EPOCHS)
        assert dataset["test_target_accuracy"].dims == (*RUN_DIMS, "epoch", "task")
        assert all(dataset.sizes[dim] == 1 for dim in RUN_DIMS)


def test_grid_dims_coords_and_renamed_task_dims(aggregated):
    assert tuple(aggregated["hessian_top_eigenvalue_mean"].dims) == GRID_DIMS
    assert aggregated["hessian_top_eigenvalue"].dims == (*GRID_DIMS, "task_hessian")
    assert aggregated["test_target_accuracy"].dims == (*GRID_DIMS, "task_accuracy")
    assert "task" not in aggregated.dims
    assert aggregated.sizes["task_hessian"] == HESSIAN_TASKS
    assert aggregated.sizes["task_accuracy"] == ACCURACY_TASKS
    assert aggregated["algorithm"].values.tolist() == sorted(ALGORITHMS)
    assert aggregated["seed"].values.tolist() == list(SEEDS)
    assert aggregated["epoch"].values.tolist() == list(EPOCHS)
    assert aggregated["dataset"].values.tolist() == ["fontglot"]
    assert aggregated["way"].values.tolist() == [5] and aggregated["shot"].values.tolist() == [1]
    assert aggregated["hessian_top_eigenvalue"].attrs["metric"] == "hessian"


def test_values_land_on_their_run_and_missing_combinations_are_nan(aggregated):
    run = {"dataset": "fontglot", "variant": "default", "way": 5, "shot": 1}
    for algorithm in ALGORITHMS:
        for seed in SEEDS:
            for epoch in EPOCHS:
                at = {**run, "algorithm": algorithm, "seed": seed, "epoch": epoch}
                expected = [accuracy_value(algorithm, seed, epoch, t) for t in range(5)]
                np.testing.assert_allclose(aggregated["test_target_accuracy"].sel(at), expected)
                hessian = aggregated["hessian_top_eigenvalue_mean"].sel(at).item()
                if ("hessian", algorithm, seed, epoch) == MISSING:
                    assert np.isnan(hessian)
                    assert np.isnan(aggregated["hessian_top_eigenvalue"].sel(at)).all()
                else:
                    expected = np.mean([hessian_value(algorithm, seed, epoch, t) for t in range(3)])
                    assert hessian == pytest.approx(expected)


def test_same_result_as_xarray_merge(metric_files, aggregated):
    opened = []
    for path in metric_files:
        with xr.open_dataset(path, engine="h5netcdf") as dataset:
            dataset = dataset.load()
        opened.append(dataset.rename(task=f"task_{dataset.attrs['metric']}"))
    merged = xr.merge(opened, join="outer", compat="no_conflicts", combine_attrs="drop")
    # ``iteration`` differs in shape by design: the aggregate holds it per run (runs may follow
    # different checkpoint schedules), a plain merge along ``epoch`` only.
    for name in merged.data_vars:
        xr.testing.assert_equal(
            merged[name].drop_attrs().drop_vars("iteration"),
            aggregated[name].drop_attrs().drop_vars("iteration"),
        )
    per_run = aggregated["iteration"].stack(run=aggregated["iteration"].dims[:-1])
    for index in range(per_run.sizes["run"]):
        np.testing.assert_array_equal(per_run.isel(run=index).values, merged["iteration"].values)


def test_provenance_lists_metric_settings(aggregated, metric_files):
    settings = json.loads(aggregated.attrs["metric_settings"])
    assert set(settings) == {"accuracy", "hessian"}
    assert [entry["tasks"] for entry in settings["hessian"]] == [HESSIAN_TASKS]
    assert aggregated.attrs["source_files"] == len(metric_files)


def test_task_counts_that_differ_are_padded_with_nan(tmp_path, metric_files):
    bigger = write_metric_file(
        tmp_path, "hessian", "regmaml", 0, (0,), tasks=6, value=hessian_value
    )
    combined = aggregate([*metric_files, bigger])
    assert combined.sizes["task_hessian"] == 6
    old = combined["hessian_top_eigenvalue"].sel(algorithm="maml", seed=0, epoch=0).squeeze()
    assert np.isfinite(old[:HESSIAN_TASKS]).all() and np.isnan(old[HESSIAN_TASKS:]).all()
    settings = json.loads(combined.attrs["metric_settings"])["hessian"]
    assert sorted(entry["tasks"] for entry in settings) == [HESSIAN_TASKS, 6]


def test_files_that_need_xarray_decoding_are_read_through_xarray(tmp_path, metric_files):
    with xr.open_dataset(metric_files[0], engine="h5netcdf") as dataset:
        dataset = dataset.load()
    dataset = dataset.assign_coords(seed=[7])
    dataset["test_target_accuracy_mean"][:] = np.nan
    encoded = tmp_path / "encoded.nc"
    dataset.to_netcdf(
        encoded,
        engine="h5netcdf",
        encoding={"test_target_accuracy_mean": {"_FillValue": -999.0}},
    )
    combined = aggregate([metric_files[0], encoded])
    assert np.isnan(combined["test_target_accuracy_mean"].sel(seed=7)).all()
    finite = np.isfinite(combined["test_target_accuracy"].sel(seed=7)).sum()
    assert finite == ACCURACY_TASKS * len(EPOCHS)


def test_scalars_only_leaves_out_per_task_variables(metric_files):
    combined = aggregate(metric_files, include_per_task=False)
    assert "hessian_top_eigenvalue" not in combined and "task_hessian" not in combined.dims
    assert "hessian_top_eigenvalue_mean" in combined


def test_no_file_stays_open(metric_files):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    aggregate(metric_files)
    names = {str(path.resolve()) for path in metric_files}
    open_files = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            open_files.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    assert not names & open_files


def test_corrupt_missing_and_foreign_files_are_named(tmp_path, metric_files):
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(AggregateError, match=r"corrupt\.nc"):
        aggregate([*metric_files, corrupt])
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(metric_files[0].read_bytes()[:600])
    with pytest.raises(AggregateError, match=r"truncated\.nc"):
        aggregate([truncated])
    with pytest.raises(AggregateError, match=r"absent\.nc not found"):
        aggregate([tmp_path / "absent.nc"])
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"x": ("t", np.arange(3.0))}).to_netcdf(foreign, engine="h5netcdf")
    with pytest.raises(AggregateError, match=r"foreign\.nc is not a metric file"):
        aggregate([foreign])
    with pytest.raises(AggregateError, match="no metric files"):
        aggregate([])


def test_duplicate_results_are_refused(metric_files):
    with pytest.raises(AggregateError, match="both hold metric 'accuracy'"):
        aggregate([metric_files[0], metric_files[0]])


def test_tidy_table_has_scalar_rows_without_nan(aggregated):
    table = tidy_table(aggregated)
    assert tuple(table.columns) == TABLE_COLUMNS
    assert set(table["variable"]) == {"test_target_accuracy_mean", "hessian_top_eigenvalue_mean"}
    assert table["value"].notna().all()
    runs = len(ALGORITHMS) * len(SEEDS) * len(EPOCHS)
    assert (table["variable"] == "test_target_accuracy_mean").sum() == runs
    assert (table["variable"] == "hessian_top_eigenvalue_mean").sum() == runs - 1
    row = table[
        (table["variable"] == "test_target_accuracy_mean")
        & (table["algorithm"] == "maml")
        & (table["seed"] == 1)
        & (table["epoch"] == 2)
    ]
    expected = np.mean([accuracy_value("maml", 1, 2, t) for t in range(ACCURACY_TASKS)])
    assert row["value"].item() == pytest.approx(expected)


def test_write_and_load_round_trip(tmp_path, aggregated):
    nc_path, csv_path = write_aggregate(aggregated, tmp_path / "agg.nc", tmp_path / "agg.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agg.csv", "agg.nc"]
    umask = os.umask(0)
    os.umask(umask)
    assert nc_path.stat().st_mode & 0o777 == 0o666 & ~umask
    loaded = load_aggregate(nc_path)
    xr.testing.assert_identical(loaded, aggregated)
    table = pd.read_csv(csv_path)
    assert tuple(table.columns) == TABLE_COLUMNS and len(table) == len(tidy_table(aggregated))
    with pytest.raises(AggregateError, match="not a metric aggregate"):
        xr.Dataset({"x": ("t", [1.0])}).to_netcdf(tmp_path / "other.nc", engine="h5netcdf")
        load_aggregate(tmp_path / "other.nc")


def run_subcommand(argv: list[str]) -> int:
    """Parse ``argv`` with the CLI's parser and run the aggregate handler (errors propagate)."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


def test_cli_reads_inputs_and_input_lists(tmp_path, metric_files, aggregated):
    listing = tmp_path / "inputs.txt"
    listing.write_text("# metric files\n" + "\n".join(map(str, metric_files[1:])) + "\n\n")
    out = tmp_path / "out" / "aggregate.nc"
    argv = ["aggregate", "--inputs", str(metric_files[0]), "--inputs-from", str(listing)]
    assert run_subcommand([*argv, "--out", str(out), "--quiet"]) == 0
    assert out.is_file() and out.with_suffix(".csv").is_file()
    xr.testing.assert_identical(load_aggregate(out), aggregated)
    csv = tmp_path / "table.csv"
    assert run_subcommand([*argv, "--out", str(out), "--csv", str(csv)]) == 0
    assert csv.is_file()
    with pytest.raises(AggregateError, match="needs --inputs"):
        run_subcommand(["aggregate", "--out", str(out)])
    with pytest.raises(AggregateError, match="cannot read input list"):
        run_subcommand(["aggregate", "--inputs-from", str(tmp_path / "none.txt"), "--out", "x"])


def test_same_inputs_give_the_same_bytes_whatever_the_hash_seed(tmp_path, metric_files):
    """Attribute order comes from the files, not from a set: PYTHONHASHSEED cannot change it."""
    outputs = []
    for hash_seed in ("0", "1", "2"):
        out = tmp_path / hash_seed / "aggregate.nc"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "metalandscape.cli",
                "aggregate",
                "--quiet",
                *(argument for path in metric_files for argument in ("--inputs", str(path))),
                "--out",
                str(out),
            ],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        outputs.append((out.read_bytes(), out.with_suffix(".csv").read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]
