"""Draft landscape figures (issue #14 item 5) drawn from synthetic aggregates."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from metalandscape.figures.landscape import (
    draw_coherence_vs_accuracy,
    draw_layer_curvature,
    draw_spectral_density,
)

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


def synthetic_aggregate(seed: int = 0) -> xr.Dataset:
    """Aggregate-shaped data: curvature growing over epochs, coherence tracking accuracy."""
    rng = np.random.default_rng(seed)
    shape = tuple(len(v) for v in RUN.values())
    epoch = np.asarray(RUN["epoch"], dtype=float).reshape((1,) * 6 + (-1,))
    grid = np.linspace(-20.0, 100.0, 241)
    top = 5.0 + 8.0 * epoch + rng.normal(0, 2, shape)
    bulk = np.exp(-0.5 * (grid / 0.8) ** 2) / (0.8 * np.sqrt(2 * np.pi))
    outlier = np.exp(-0.5 * ((grid - top[..., None]) / 2.0) ** 2) / (2.0 * np.sqrt(2 * np.pi))
    density = 0.97 * bulk + 0.03 * outlier
    accuracy = 0.4 + 0.05 * epoch + rng.normal(0, 0.02, shape)
    coherence = 0.02 + 0.3 * (accuracy - 0.4) + rng.normal(0, 0.01, shape)
    function = 0.1 + 0.8 * (accuracy - 0.4) + rng.normal(0, 0.01, shape)
    layer_scale = np.array([0.5, 2.0, 1.0, 4.0])
    layers = top[..., None] * layer_scale / 4
    dims = tuple(RUN)
    data = xr.Dataset(
        {
            "spectral_density_mean": ((*dims, "eigenvalue"), density),
            "layer_top_eigenvalue_mean": ((*dims, "layer"), layers),
            "test_target_accuracy_mean": (dims, accuracy),
            "trajectory_coherence": (dims, coherence),
            "function_coherence": (dims, function),
        },
        coords={**RUN, "eigenvalue": grid, "layer": LAYERS},
    )
    data["spectral_density_mean"][dict(algorithm=0, epoch=slice(6, None))] = np.nan  # unmeasured
    return data


@pytest.mark.parametrize(
    "draw", [draw_spectral_density, draw_layer_curvature, draw_coherence_vs_accuracy]
)
def test_landscape_figures_draw_from_an_aggregate(draw) -> None:
    import matplotlib.pyplot as plt

    figure = draw(synthetic_aggregate())
    try:
        drawn = [axis for axis in figure.axes if axis.get_visible() and axis.has_data()]
        assert len(drawn) >= 2
    finally:
        plt.close(figure)


@pytest.mark.parametrize(
    ("draw", "variable"),
    [
        (draw_spectral_density, "spectral_density_mean"),
        (draw_layer_curvature, "layer_top_eigenvalue_mean"),
        (draw_coherence_vs_accuracy, "function_coherence"),
    ],
)
def test_landscape_figures_name_a_missing_variable(draw, variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        draw(synthetic_aggregate().drop_vars(variable))
