"""Issue 14's landscape figures: registered, drawn from an aggregate, honest about seeds."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from metalandscape.figures import FIGURES, FigureError, render_figure
from metalandscape.figures.landscape import (
    FUNCTION_COHERENCE_FIGURE,
    LAYER_CURVATURE_FIGURE,
    SPECTRAL_DENSITY_FIGURE,
)
from metalandscape.statistics import INTERVAL_DESCRIPTION

RUN = {
    "dataset": ["fontglot"],
    "variant": ["default"],
    "way": [5],
    "shot": [1],
    "algorithm": ["fomaml", "maml"],
    "seed": [0, 1, 2],
    "epoch": np.arange(1, 9),
}
LAYERS = ["features.0.0", "features.0.1", "features.3.0", "head"]
GRID = np.linspace(-20.0, 100.0, 241)
SPECS = (SPECTRAL_DENSITY_FIGURE, LAYER_CURVATURE_FIGURE, FUNCTION_COHERENCE_FIGURE)


def synthetic_aggregate(seeds=(0, 1, 2)) -> xr.Dataset:
    """Aggregate-shaped data: curvature growing over epochs, coherence tracking accuracy."""
    run = {**RUN, "seed": list(seeds)}
    rng = np.random.default_rng(0)
    shape = tuple(len(v) for v in run.values())
    epoch = np.asarray(run["epoch"], dtype=float).reshape((1,) * 6 + (-1,))
    top = 5.0 + 4.0 * epoch + rng.normal(0, 2, shape)
    bulk = np.exp(-0.5 * (GRID / 0.8) ** 2) / (0.8 * np.sqrt(2 * np.pi))
    outlier = np.exp(-0.5 * ((GRID - top[..., None]) / 2.0) ** 2) / (2.0 * np.sqrt(2 * np.pi))
    accuracy = 0.4 + 0.05 * epoch + rng.normal(0, 0.02, shape)
    dims = tuple(run)
    data = xr.Dataset(
        {
            "spectral_density_mean": ((*dims, "eigenvalue"), 0.97 * bulk + 0.03 * outlier),
            "layer_top_eigenvalue_mean": (
                (*dims, "layer"),
                top[..., None] * np.array([0.5, 2.0, 1.0, 4.0]) / 4,
            ),
            "test_target_accuracy_mean": (dims, accuracy),
            "trajectory_coherence": (
                dims,
                0.02 + 0.3 * (accuracy - 0.4) + rng.normal(0, 0.01, shape),
            ),
            "function_coherence": (dims, 0.1 + 0.8 * (accuracy - 0.4) + rng.normal(0, 0.01, shape)),
        },
        coords={**run, "eigenvalue": GRID, "layer": LAYERS},
    )
    data["spectral_density_mean"][dict(algorithm=0, epoch=slice(6, None))] = np.nan  # unmeasured
    return data


def test_the_three_figures_are_registered_with_captions_that_say_what_bands_are() -> None:
    for spec in SPECS:
        assert FIGURES[spec.name] is spec
        assert "extension" in spec.caption and "seed" in spec.caption
    for spec in (LAYER_CURVATURE_FIGURE, FUNCTION_COHERENCE_FIGURE):
        assert INTERVAL_DESCRIPTION in " ".join(spec.caption.split())


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.name)
def test_each_renders_pdf_and_png_one_panel_per_setting_and_algorithm(tmp_path, spec) -> None:
    dataset = synthetic_aggregate()
    assert spec.is_drawable(dataset)
    pdf, png = render_figure(spec.name, dataset, tmp_path / f"{spec.name}.pdf")
    assert pdf.stat().st_size > 0 and png.stat().st_size > 0
    figure = spec.draw(dataset)
    titled = [axes for axes in figure.get_axes() if axes.get_title()]
    assert len(titled) == 2  # maml, fomaml (density, layers) or two spaces (coherence)


def test_spectral_density_crops_to_the_measured_spectrum_and_counts_seeds() -> None:
    figure = SPECTRAL_DENSITY_FIGURE.draw(synthetic_aggregate())
    panels = [axes for axes in figure.get_axes() if axes.get_title()]
    low, high = panels[0].get_xlim()
    assert GRID[0] <= low < -2.0 and 40.0 < high < GRID[-1]  # bulk at 0, outlier up to ~40
    assert all(title.endswith("3 seeds") for title in (axes.get_title() for axes in panels))


def test_coherence_legend_gives_per_seed_correlation_with_interval() -> None:
    figure = FUNCTION_COHERENCE_FIGURE.draw(synthetic_aggregate())
    texts = [t.get_text() for axes in figure.get_axes() for t in axes.get_legend().get_texts()]
    assert len(texts) == 4 and all("R = " in t and ", 3 seeds" in t and "[" in t for t in texts)
    two = FUNCTION_COHERENCE_FIGURE.draw(synthetic_aggregate(seeds=(0, 1)))
    texts = [t.get_text() for axes in two.get_axes() for t in axes.get_legend().get_texts()]
    assert all(", 2 seeds" in t and "[" not in t for t in texts)  # no interval below 3 seeds


@pytest.mark.parametrize(
    ("spec", "variable"),
    [
        (SPECTRAL_DENSITY_FIGURE, "spectral_density_mean"),
        (LAYER_CURVATURE_FIGURE, "layer_top_eigenvalue_mean"),
        (FUNCTION_COHERENCE_FIGURE, "function_coherence"),
    ],
    ids=lambda value: getattr(value, "name", value),
)
def test_a_missing_variable_is_named(tmp_path, spec, variable: str) -> None:
    dataset = synthetic_aggregate().drop_vars(variable)
    assert not spec.is_drawable(dataset)
    with pytest.raises(FigureError, match=variable):
        render_figure(spec.name, dataset, tmp_path / "figure.pdf")
    assert list(tmp_path.iterdir()) == []
