"""Issue 14's landscape figures: spectral density and per-layer λmax over meta-training, and
function- vs parameter-space coherence against accuracy.

Drawn from the aggregate like every figure: one panel per setting and algorithm (seeds pooled).
Variables with extra dimensions (``eigenvalue``, ``layer``) keep them after the run dimensions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    TEST_ACCURACY,
    TEST_ACCURACY_LABEL,
    TEST_MSE,
    TRAJECTORY_COHERENCE,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs, lazy_import
from metalandscape.statistics import INTERVAL_DESCRIPTION, per_seed_correlation, scalar_interval

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

sns = lazy_import("seaborn")

SPECTRAL_DENSITY = "spectral_density_mean"
LAYER_TOP_EIGENVALUE = "layer_top_eigenvalue_mean"
FUNCTION_COHERENCE = "function_coherence"
SCORES = (
    (TEST_ACCURACY, TEST_ACCURACY_LABEL, 1.0),
    (TEST_MSE, "−MSE (meta-test target)", -1.0),
)
#: The colour scale spans this many decades below the largest density shown.
DENSITY_DECADES = 5
MAX_COLUMNS = 3


def _panels(dataset: xr.Dataset, variables: list[str]) -> list[tuple[Setting, str]]:
    """(setting, algorithm) of every meta-learner with finite values of ``variables``."""
    return [
        (setting, algorithm)
        for setting in common.settings_with_data(dataset, variables)
        for algorithm in common.algorithms_with_data(dataset, setting, variables)
    ]


def _missing(name: str, dataset: xr.Dataset, variables: list[str], metrics: str) -> str | None:
    lacking = common.missing_variables(dataset, variables)
    if lacking:
        return (
            f"{name} needs variables {variables} (metrics {metrics}); the aggregate lacks {lacking}"
        )
    if not _panels(dataset, variables):
        return f"{name} needs finite {variables} of a meta-learner run; the aggregate has none"
    return None


def _seed_count(data: xr.DataArray) -> int:
    """Seeds with any finite value."""
    finite = np.isfinite(data.values).reshape(data.sizes["seed"], -1)
    return int(finite.any(axis=1).sum())


def _panel_title(setting: Setting, algorithm: str, seeds: int) -> str:
    return f"{setting.title}\n{common.algorithm_label(algorithm)}, {seeds} seed{'s' * (seeds != 1)}"


# ------------------------------------------------------------------------------ spectral density


def missing_for_spectral_density(dataset: xr.Dataset) -> str | None:
    """Why the spectral density figure cannot be drawn from ``dataset``, or None."""
    return _missing("spectraldensity", dataset, [SPECTRAL_DENSITY], "'spectral_density'")


def _density_by_epoch(dataset: xr.Dataset, setting: Setting, algorithm: str) -> xr.DataArray:
    """Seed-mean density as (epoch, eigenvalue), unmeasured epochs dropped."""
    data = dataset[SPECTRAL_DENSITY].sel(setting.select()).sel(algorithm=algorithm)
    data = data.transpose("seed", "epoch", "eigenvalue")
    return data.mean("seed", skipna=True).dropna("epoch", how="all")


def _shown_eigenvalues(densities: list[xr.DataArray], floor: float) -> tuple[float, float]:
    """The eigenvalue range where any panel's density reaches ``floor`` (grid ends otherwise)."""
    grid = densities[0]["eigenvalue"].values
    reached = np.zeros(grid.size, dtype=bool)
    for density in densities:
        reached |= np.nan_to_num(density.values, nan=0.0).max(axis=0) >= floor
    if not reached.any():
        return float(grid[0]), float(grid[-1])
    low, high = grid[np.flatnonzero(reached)[[0, -1]]]
    margin = 0.05 * max(high - low, grid[1] - grid[0])
    return float(max(grid[0], low - margin)), float(min(grid[-1], high + margin))


def draw_spectral_density(dataset: xr.Dataset) -> Figure:
    """Heat map per setting and algorithm: epoch × eigenvalue, colour = seed-mean density (log)."""
    panels.require(dataset, missing_for_spectral_density)
    run_kinds = _panels(dataset, [SPECTRAL_DENSITY])
    densities = [_density_by_epoch(dataset, *panel) for panel in run_kinds]
    top = max(float(np.nanmax(density.values)) for density in densities)
    floor = top * 10.0**-DENSITY_DECADES
    low, high = _shown_eigenvalues(densities, floor)
    rows, columns = panels.grid_shape(len(run_kinds), MAX_COLUMNS)
    with common.figure_style():  # loads matplotlib: its submodules import whole from here on
        from matplotlib.colors import LogNorm
        from matplotlib.ticker import MaxNLocator

        norm = LogNorm(vmin=floor, vmax=top)
        figure = common.new_figure(4.3 * columns + 0.9, 0.9 + 3.0 * rows)
        grid = figure.subplots(rows, columns, squeeze=False)
        mesh = None
        for axes, (setting, algorithm), density in zip(grid.flat, run_kinds, densities):
            values = np.clip(np.nan_to_num(density.values, nan=0.0), floor, None)
            mesh = axes.pcolormesh(
                density["eigenvalue"].values,
                density["epoch"].values,
                values,
                shading="nearest",
                norm=norm,
                cmap="viridis",
                rasterized=True,
            )
            seeds = _seed_count(
                dataset[SPECTRAL_DENSITY].sel({**setting.select(), "algorithm": algorithm})
            )
            axes.set_title(_panel_title(setting, algorithm, seeds))
            axes.set_xlim(low, high)
            axes.set_xlabel("Hessian eigenvalue λ")
            axes.set_ylabel("meta-training epoch")
            axes.yaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
            axes.grid(False)
        for axes in list(grid.flat)[len(run_kinds) :]:
            axes.set_axis_off()
        figure.colorbar(mesh, ax=grid, label="spectral density (log scale)", shrink=0.9)
        figure.suptitle("Hessian spectral density of the support loss at θ̃ᵢ over meta-training")
    return figure


# ------------------------------------------------------------------------------- layer curvature


def missing_for_layer_curvature(dataset: xr.Dataset) -> str | None:
    """Why the per-layer curvature figure cannot be drawn from ``dataset``, or None."""
    return _missing("layercurvature", dataset, [LAYER_TOP_EIGENVALUE], "'layer_curvature'")


def _layer_colors(layers: list[str]) -> list[tuple[float, float, float]]:
    """Distinct colours, one per layer (colour-blind safe up to 10 layers)."""
    return sns.color_palette("colorblind" if len(layers) <= 10 else "husl", len(layers))


def draw_layer_curvature(dataset: xr.Dataset) -> Figure:
    """Per setting and algorithm: each layer's λmax of its Hessian block against epoch (log)."""
    panels.require(dataset, missing_for_layer_curvature)
    run_kinds = _panels(dataset, [LAYER_TOP_EIGENVALUE])
    layers = [str(layer) for layer in dataset["layer"].values.tolist()]
    colors = _layer_colors(layers)
    with common.figure_style():
        figure, grid = panels.wrapped_figure(
            len(run_kinds), MAX_COLUMNS, (4.3, 3.0), min_width=0, margin=1.2
        )
        for axes, (setting, algorithm) in zip(grid, run_kinds):
            data = dataset[LAYER_TOP_EIGENVALUE].sel(setting.select()).sel(algorithm=algorithm)
            data = data.transpose("seed", "epoch", "layer").dropna("epoch", how="all")
            for layer, color in zip(layers, colors):
                common.plot_mean_band(
                    axes,
                    data["epoch"].values,
                    data.sel(layer=layer).values,
                    color=color,
                    bounds=(0.0, np.inf),
                )
            means = data.mean("seed", skipna=True).values
            if np.nanmin(means) > 0:
                # Log scale sized to the means: a wide 3-seed band whose lower end reaches 0
                # runs off the bottom instead of squashing every line.
                axes.set_yscale("log")
                axes.set_ylim(np.nanmin(means) / 3, np.nanmax(means) * 3)
            axes.set_title(_panel_title(setting, algorithm, _seed_count(data)))
            axes.set_xlabel("meta-training epoch")
            axes.set_ylabel("λmax of the layer's Hessian block")
            common.integer_ticks(axes)
        handles = [
            panels.legend_line(layer, color, marker="o", markersize=3.5)
            for layer, color in zip(layers, colors)
        ]
        panels.figure_legend(
            figure, handles, ncols=min(len(layers), 4), title="layer (parameter block)"
        )
        figure.suptitle("Per-layer curvature of the support loss at θ̃ᵢ over meta-training")
    return figure


# ------------------------------------------------------------------- coherence against accuracy


def _score(dataset: xr.Dataset) -> tuple[str, str, float] | None:
    """(variable, label, sign) of the generalization score: accuracy, else −MSE."""
    for variable, label, sign in SCORES:
        if variable in dataset.data_vars:
            return variable, label, sign
    return None


def missing_for_coherence_vs_accuracy(dataset: xr.Dataset) -> str | None:
    """Why the coherence-vs-accuracy figure cannot be drawn from ``dataset``, or None."""
    score = _score(dataset)
    variables = [FUNCTION_COHERENCE, TRAJECTORY_COHERENCE, score[0] if score else SCORES[0][0]]
    return _missing(
        "functioncoherence",
        dataset,
        variables,
        "'function_coherence', 'trajectory_coherence' and 'accuracy'",
    )


def _correlation_label(x: xr.DataArray, y: xr.DataArray) -> str:
    """Per-seed Pearson R over epochs, summarised in Fisher z: ``R = m [lo, hi], n seeds``."""
    values = np.asarray([per_seed_correlation(a, b) for a, b in zip(x.values, y.values)])
    mean, low, high, seeds = scalar_interval(values, correlation=True)
    if seeds == 0:
        return "R: too few epochs"
    interval = f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) else ""
    return f"R = {mean:.2f}{interval}, {seeds} seed{'s' * (seeds != 1)}"


def draw_coherence_vs_accuracy(dataset: xr.Dataset) -> Figure:
    """Per setting: trajectory coherence (left) and function coherence (right) against the
    score, one point per (seed, epoch), colour = algorithm; legend: per-seed Pearson R."""
    panels.require(dataset, missing_for_coherence_vs_accuracy)
    score, score_label, sign = _score(dataset)  # type: ignore[misc]
    variables = [FUNCTION_COHERENCE, TRAJECTORY_COHERENCE, score]
    settings = common.settings_with_data(dataset, variables)
    spaces = (
        (TRAJECTORY_COHERENCE, "parameter space: trajectory coherence"),
        (FUNCTION_COHERENCE, "function space: function coherence"),
    )
    with common.figure_style():
        figure = common.new_figure(9.0, 0.8 + 3.9 * len(settings))
        grid = figure.subplots(len(settings), 2, squeeze=False)
        for row, setting in zip(grid, settings):
            algorithms = common.algorithms_with_data(dataset, setting, variables)
            for axes, (variable, label) in zip(row, spaces):
                _scatter_panel(axes, dataset, setting, algorithms, variable, score, sign)
                axes.set_xlabel(label)
                axes.set_ylabel(score_label)
                axes.set_title(setting.title)
        figure.suptitle("Coherence in parameter space and in function space against accuracy")
    return figure


def _scatter_panel(
    axes: Axes,
    dataset: xr.Dataset,
    setting: Setting,
    algorithms: list[str],
    variable: str,
    score: str,
    sign: float,
) -> None:
    import xarray as xr

    for algorithm in algorithms:
        x, y = xr.align(
            common.seed_by_epoch(dataset, variable, setting, algorithm),
            sign * common.seed_by_epoch(dataset, score, setting, algorithm),
            join="inner",
        )
        keep = np.isfinite(x.values) & np.isfinite(y.values)
        axes.scatter(
            x.values[keep],
            y.values[keep],
            s=14,
            color=common.algorithm_color(algorithm),
            label=f"{common.algorithm_label(algorithm)}: {_correlation_label(x, y)}",
            alpha=0.8,
        )
    axes.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.22),
        frameon=False,
        fontsize="small",
        title="per-seed Pearson R over epochs",
        title_fontsize="small",
    )


# ---------------------------------------------------------------------------------- the specs

_BANDS = f"Lines: {INTERVAL_DESCRIPTION}; below 3 seeds each seed is drawn as a thin line."

SPECTRAL_DENSITY_FIGURE = FigureSpec(
    name="spectraldensity",
    description="Hessian spectral density (SLQ) over meta-training, heat map per setting",
    draw=draw_spectral_density,
    variables=(SPECTRAL_DENSITY,),
    missing=missing_for_spectral_density,
    needs=(Needs(("spectral_density",), roles=("meta-learner",)),),
    title="Hessian spectrum (extension)",
    caption="""\
**Hessian spectral density over meta-training** (an extension, not a figure of the paper). For
each meta-test task, stochastic Lanczos quadrature (Ghorbani et al. 2019) estimates the
eigenvalue density of the support-loss Hessian at the adapted parameters θ̃ᵢ, Gaussian-smoothed
on a fixed eigenvalue grid; each row of a panel is one checkpoint epoch, the colour the density
averaged over tasks and then over the seeds the panel title counts (log scale, five decades
below the largest value; lower is drawn as the floor). The x range is cropped to where any
panel reaches that floor. No band: the heat map shows the mean only. An outlier moving right
over the epochs is λmax growing away from the bulk near zero.
""",
)
LAYER_CURVATURE_FIGURE = FigureSpec(
    name="layercurvature",
    description="λmax of each layer's Hessian block over meta-training",
    draw=draw_layer_curvature,
    variables=(LAYER_TOP_EIGENVALUE,),
    missing=missing_for_layer_curvature,
    needs=(Needs(("layer_curvature",), roles=("meta-learner",)),),
    title="Per-layer curvature (extension)",
    caption=f"""\
**Per-layer curvature over meta-training** (an extension, not a figure of the paper). For each
parameter block (a layer's weights and biases), the top eigenvalue of the support-loss Hessian
restricted to that block, at each meta-test task's adapted parameters θ̃ᵢ, averaged over tasks.
{_BANDS} The y axis is logarithmic and sized to the means: a band whose lower end
reaches zero runs off the bottom. It shows which layers carry the sharpness that figure 2 sees in the whole Hessian.
""",
)
FUNCTION_COHERENCE_FIGURE = FigureSpec(
    name="functioncoherence",
    description="trajectory (parameter-space) and function-space coherence against accuracy",
    draw=draw_coherence_vs_accuracy,
    variables=(FUNCTION_COHERENCE, TRAJECTORY_COHERENCE),
    missing=missing_for_coherence_vs_accuracy,
    needs=(
        Needs(("function_coherence", "trajectory_coherence", "accuracy"), roles=("meta-learner",)),
    ),
    title="Function-space coherence (extension)",
    caption=f"""\
**Coherence in parameter space and in function space against accuracy** (an extension, not a
figure of the paper). Left: the paper's trajectory coherence, the mean cosine between the
parameter changes θ̃ᵢ − θs of pairs of meta-test tasks. Right: function coherence, the mean
cosine between the changes of the network's centred logits on a fixed probe set, which
parameter symmetries (e.g. rescaling a convolution before BatchNorm) cannot move. One point per
seed and checkpoint epoch. The legend gives each algorithm's Pearson R over epochs, computed per
seed and summarised as the {INTERVAL_DESCRIPTION}. Claim 7 of the claims table compares the two.
""",
)

__all__ = [
    "FUNCTION_COHERENCE_FIGURE",
    "LAYER_CURVATURE_FIGURE",
    "SPECTRAL_DENSITY_FIGURE",
    "draw_coherence_vs_accuracy",
    "draw_layer_curvature",
    "draw_spectral_density",
    "missing_for_coherence_vs_accuracy",
    "missing_for_layer_curvature",
    "missing_for_spectral_density",
]

SPECS = (SPECTRAL_DENSITY_FIGURE, LAYER_CURVATURE_FIGURE, FUNCTION_COHERENCE_FIGURE)
