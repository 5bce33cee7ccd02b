"""Interventions against MAML, paired by seed: known answers on a synthetic aggregate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from metalandscape.claims import Thresholds
from metalandscape.interventions import QUANTITIES, intervention_table, interventions_markdown

ITERATIONS = np.array([0, 100, 500, 1000, 1500, 2000, 2500], dtype=float)
SEEDS = [0, 1, 2]


def aggregate(shift: dict[str, float]) -> xr.Dataset:
    """MAML (variant T5) and Sharp-MAML (variant both) over 7 checkpoints and 3 seeds; Sharp-MAML's
    accuracy is MAML's + 0.05 + a seed wiggle, its λmax MAML's × 0.5 in the window."""
    coords = {
        "dataset": ["fontglot"],
        "variant": ["T5", "both"],
        "way": [5],
        "shot": [1],
        "algorithm": ["maml", "sharpmaml"],
        "seed": SEEDS,
        "epoch": np.arange(len(ITERATIONS)),
    }
    shape = tuple(len(v) for v in coords.values())
    base = {
        "test_target_accuracy_mean": np.linspace(0.3, 0.9, len(ITERATIONS)),
        "hessian_top_eigenvalue_mean": np.linspace(20, 4, len(ITERATIONS)),
        "trajectory_coherence": np.linspace(0.05, 0.02, len(ITERATIONS)),
    }
    data = {}
    for name, values in base.items():
        array = np.full(shape, np.nan)
        for s, seed in enumerate(SEEDS):
            wiggle = 0.001 * (seed - 1)
            array[0, 0, 0, 0, 0, s] = values + wiggle  # MAML, T5
            array[0, 1, 0, 0, 1, s] = (
                values * shift.get(name + "*", 1.0) + shift.get(name, 0.0) + 2 * wiggle
            )
        data[name] = (tuple(coords), array)
    iteration = np.broadcast_to(ITERATIONS, shape).astype(float)
    return xr.Dataset(data, coords={**coords, "iteration": (tuple(coords), iteration)})


def test_paired_changes_have_known_answers():
    dataset = aggregate({"test_target_accuracy_mean": 0.05, "hessian_top_eigenvalue_mean*": 0.5})
    table = intervention_table([dataset], Thresholds())
    assert set(table["intervention"]) == {"Sharp-MAML [both]"}
    assert set(table["reference"]) == {"MAML [T5]"}
    rows = {row.quantity: row for row in table.itertuples()}
    final = rows["final meta-test accuracy"]
    assert final.change == pytest.approx(0.05) and final.seeds == 3 and final.moved
    assert final.ci_low < 0.05 < final.ci_high
    area = rows["meta-test accuracy, area under the curve in the window"]
    assert area.change == pytest.approx(0.05) and area.moved
    curvature = rows["E[λmax] at θ̃ (window mean)"]
    window_mean = np.linspace(20, 4, 7)[2:].mean()  # iterations 500-2,500
    assert curvature.reference_mean == pytest.approx(window_mean, rel=1e-3)
    assert curvature.change == pytest.approx(-0.5 * window_mean, rel=1e-3)
    assert curvature.relative_change == pytest.approx(-0.5, rel=1e-2) and curvature.moved
    coherence = rows["trajectory coherence (window mean)"]
    assert abs(coherence.change) < 1e-3 and not coherence.moved  # only the seed wiggle
    assert "E[λmax] at θs (window mean)" not in rows  # not measured
    text = interventions_markdown(table, Thresholds())
    assert "Sharp-MAML [both] vs MAML [T5]" in text and "| yes |" in text


def test_a_change_below_the_minimum_relative_change_has_not_moved():
    dataset = aggregate({"test_target_accuracy_mean": 0.01})
    strict = Thresholds.from_mapping({"intervention_min_relative_change": 0.05})
    rows = intervention_table([dataset], strict)
    final = rows[rows["quantity"] == "final meta-test accuracy"].iloc[0]
    assert final.ci_low > 0 and final.relative_change < 0.05 and not final.moved
    loose = intervention_table(
        [dataset], Thresholds.from_mapping({"intervention_min_relative_change": 0})
    )
    assert loose[loose["quantity"] == "final meta-test accuracy"].iloc[0].moved


def test_fewer_than_three_seeds_give_no_interval_and_never_move():
    dataset = aggregate({"test_target_accuracy_mean": 0.05}).isel(seed=[0, 1])
    table = intervention_table([dataset], Thresholds())
    assert (table["seeds"] == 2).all() and table["ci_low"].isna().all()
    assert not table["moved"].any()


def test_no_reference_no_rows():
    dataset = aggregate({}).sel(algorithm=["sharpmaml"])
    assert intervention_table([dataset], Thresholds()).empty
    assert "No intervention run" in interventions_markdown(
        intervention_table([dataset], Thresholds()), Thresholds()
    )


def test_figure_renders(tmp_path):
    from metalandscape.figures.interventions import draw_interventions

    table = intervention_table(
        [aggregate({"test_target_accuracy_mean": 0.05, "hessian_top_eigenvalue_mean*": 0.5})],
        Thresholds(),
    )
    pdf, png = draw_interventions(table, tmp_path / "interventions.pdf")
    assert pdf.stat().st_size > 0 and png.stat().st_size > 0
    assert len(QUANTITIES) == 6 and not math.isnan(table["change"].iloc[0])


def test_the_claims_command_writes_every_table_and_figure_in_one_process(tmp_path):
    """The claims table, the window sensitivity and the interventions, with both figures, from
    one ``metalandscape claims`` call on an aggregate file."""
    from metalandscape.cli import main

    aggregate_file = tmp_path / "interventions.nc"
    aggregate({"test_target_accuracy_mean": 0.05}).to_netcdf(aggregate_file, engine="h5netcdf")
    out = {name: tmp_path / name for name in ("c.csv", "c.md", "w.csv", "w.md", "i.csv", "i.md")}
    argv = ["claims", "--input", str(aggregate_file), "--out-csv", str(out["c.csv"])]
    argv += ["--out-md", str(out["c.md"]), "--windows-csv", str(out["w.csv"])]
    argv += ["--windows-md", str(out["w.md"]), "--windows-figure", str(tmp_path / "w.pdf")]
    argv += ["--interventions-csv", str(out["i.csv"]), "--interventions-md", str(out["i.md"])]
    argv += ["--interventions-figure", str(tmp_path / "i.pdf")]
    assert main(argv) == 0
    for path in [*out.values(), *(tmp_path / f"{n}.{e}" for n in "wi" for e in ("pdf", "png"))]:
        assert path.stat().st_size > 0, path
    assert "Sharp-MAML [both] vs MAML [T5]" in out["i.md"].read_text()
