"""Figures 5 and 8: trajectory coherence vs accuracy, and gradient coherence vs −MSE (sinusoid)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    GRADIENT_COHERENCE,
    GRADIENT_COHERENCE_LABEL,
    MIN_EPOCHS_FOR_CORRELATION,
    TEST_ACCURACY,
    TEST_ACCURACY_LABEL,
    TEST_MSE,
    TRAJECTORY_COHERENCE,
    TRAJECTORY_COHERENCE_LABEL,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs, lazy_import
from metalandscape.statistics import per_seed_correlation, scalar_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

sns = lazy_import("seaborn")
xr = lazy_import("xarray")

FIG5_VARIABLES = (TRAJECTORY_COHERENCE, TEST_ACCURACY)
FIG8_VARIABLES = (GRADIENT_COHERENCE, TEST_MSE)


def _left_color() -> tuple[float, float, float]:
    """Coherence (the left axis): orange, as in the paper."""
    return sns.color_palette("colorblind", 10)[1]


def _right_color() -> tuple[float, float, float]:
    """Accuracy or −MSE (the right axis): blue, as in the paper."""
    return sns.color_palette("colorblind", 10)[0]


def _missing(name: str, dataset: xr.Dataset, variables: tuple[str, ...], what: str) -> str | None:
    lacking = common.missing_variables(dataset, variables)
    if lacking:
        return f"{name} needs variables {list(variables)}; the aggregate lacks {lacking}"
    datasets = ["sinusoid"] if name == "fig8" else None
    if not common.settings_with_data(dataset, variables, datasets=datasets):
        present = sorted(dataset["dataset"].values.tolist())
        return (
            f"{name} needs {what} with finite {' and '.join(variables)}; "
            f"the aggregate has datasets {present} but no such values"
        )
    return None


def missing_for_fig5(dataset: xr.Dataset) -> str | None:
    """Why Figure 5 cannot be drawn from ``dataset``, or None."""
    return _missing("fig5", dataset, FIG5_VARIABLES, "classification runs of a MAML-family method")


def missing_for_fig8(dataset: xr.Dataset) -> str | None:
    """Why Figure 8 cannot be drawn from ``dataset``, or None."""
    return _missing("fig8", dataset, FIG8_VARIABLES, "sinusoid runs of a MAML-family method")


def _twin_panel(
    axes: Axes,
    dataset: xr.Dataset,
    left: xr.DataArray,
    right: xr.DataArray,
    *,
    left_label: str,
    right_label: str,
    right_sign: float = 1.0,
) -> Axes:
    """Left series on ``axes`` and right series on a twin axis, each coloured like its ticks."""
    left_bounds = common.variable_bounds(str(left.name))
    low, high = common.variable_bounds(str(right.name))
    right_bounds = (low, high) if right_sign > 0 else (-high, -low)
    common.plot_mean_band(
        axes, common.checkpoint_x(left), left.values, color=_left_color(), bounds=left_bounds
    )
    twin = axes.twinx()
    common.plot_mean_band(
        twin,
        common.checkpoint_x(right),
        right_sign * right.values,
        color=_right_color(),
        marker="s",
        linestyle="--",
        bounds=right_bounds,
    )
    panels.colored_y_axis(axes, left_label, _left_color())
    panels.colored_y_axis(twin, right_label, _right_color())
    twin.grid(False)
    common.checkpoint_axis(axes, dataset)
    return twin


def _series_legend(figure: Figure, left_label: str, right_label: str) -> None:
    handles = [
        panels.legend_line(left_label, _left_color(), marker="o", markersize=3.5),
        panels.legend_line(right_label, _right_color(), marker="s", markersize=3.5, ls="--"),
    ]
    panels.figure_legend(figure, handles, ncols=2)


def _fig5_cells(
    settings: Sequence[Setting],
    algorithms: Sequence[str],
    per_setting: dict[Setting, list[str]],
) -> list[tuple[Axes, tuple[Setting, str]]]:
    """Fig. 5's axes: settings × algorithms, or, for one setting, its algorithms wrapped at
    three columns (five algorithms in one row were too narrow to read)."""
    size = (4.2, 2.8)
    if len(settings) == 1:
        kinds = [(settings[0], a) for a in algorithms if a in per_setting[settings[0]]]
        _, grid = panels.wrapped_figure(len(kinds), 3, size, min_width=7.0, margin=0.7)
        return list(zip(grid, kinds))
    figure = common.new_figure(max(size[0] * len(algorithms), 7.0), 0.7 + size[1] * len(settings))
    grid = figure.subplots(len(settings), len(algorithms), squeeze=False)
    cells = []
    for row, setting in enumerate(settings):
        for column, algorithm in enumerate(algorithms):
            if algorithm in per_setting[setting]:
                cells.append((grid[row, column], (setting, algorithm)))
            else:
                grid[row, column].set_axis_off()
    return cells


def draw_fig5(dataset: xr.Dataset) -> Figure:
    """Trajectory coherence (left) and meta-test target accuracy (right) vs epoch per run kind."""
    panels.require(dataset, missing_for_fig5)
    settings = common.settings_with_data(dataset, FIG5_VARIABLES)
    per_setting = {s: common.algorithms_with_data(dataset, s, FIG5_VARIABLES) for s in settings}
    algorithms = common.ordered_algorithms(
        sorted({a for found in per_setting.values() for a in found})
    )
    with common.figure_style():
        cells = _fig5_cells(settings, algorithms, per_setting)
        for axes, (setting, algorithm) in cells:
            _twin_panel(
                axes,
                dataset,
                common.seed_by_epoch(dataset, TRAJECTORY_COHERENCE, setting, algorithm),
                common.seed_by_epoch(dataset, TEST_ACCURACY, setting, algorithm),
                left_label="trajectory coherence",
                right_label="test target accuracy",
            )
            axes.set_title(f"{setting.title}\n{common.algorithm_label(algorithm)}")
            axes.set_xlabel(common.checkpoint_label(dataset))
        figure = cells[0][0].figure
        figure.suptitle("Trajectory coherence and meta-test accuracy during meta-training")
        _series_legend(
            figure,
            TRAJECTORY_COHERENCE_LABEL,
            TEST_ACCURACY_LABEL,
        )
    return figure


def _fig8_run(dataset: xr.Dataset) -> tuple[str, str, list[Setting]]:
    """The variant and algorithm Figure 8 shows (default and MAML when present), and its K."""
    settings = common.settings_with_data(dataset, FIG8_VARIABLES, datasets=["sinusoid"])
    variants = sorted({s.variant for s in settings}, key=lambda v: (v != "default", v))
    variant = variants[0]
    settings = [s for s in settings if s.variant == variant]
    algorithms = common.ordered_algorithms(
        sorted(
            {a for s in settings for a in common.algorithms_with_data(dataset, s, FIG8_VARIABLES)}
        )
    )
    algorithm = algorithms[0]
    settings = [
        s for s in settings if algorithm in common.algorithms_with_data(dataset, s, FIG8_VARIABLES)
    ]
    return variant, algorithm, sorted(settings, key=lambda s: s.shot)


def _final_values(coherence: xr.DataArray, mse: xr.DataArray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: gradient coherence and −MSE at that seed's last epoch with both measured."""
    both = np.isfinite(coherence.values) & np.isfinite(mse.values)
    final_coherence, final_negative_mse = [], []
    for seed in range(both.shape[0]):
        epochs = np.flatnonzero(both[seed])
        if epochs.size:
            final_coherence.append(coherence.values[seed, epochs[-1]])
            final_negative_mse.append(-mse.values[seed, epochs[-1]])
    return np.asarray(final_coherence), np.asarray(final_negative_mse)


def _correlations(coherence: xr.DataArray, mse: xr.DataArray) -> np.ndarray:
    """Per seed: Pearson R over epochs of gradient coherence and −MSE (seeds without one left out)."""
    values = np.asarray([per_seed_correlation(x, -y) for x, y in zip(coherence.values, mse.values)])
    return values[np.isfinite(values)]


def _k_axis(axes: Axes, shots: list[int]) -> None:
    if len(shots) > 1 and min(shots) > 0:
        axes.set_xscale("log", base=2)
    axes.set_xlim(min(shots) / 1.4, max(shots) * 1.4)
    axes.set_xticks(shots, [str(k) for k in shots])
    axes.minorticks_off()
    axes.set_xlabel("K (support examples per task)")


def _plot_points(
    axes: Axes,
    shots: list[int],
    samples: list[np.ndarray],
    *,
    color: tuple[float, float, float],
    marker: str,
    linestyle: str,
    dodge: float = 1.0,
    correlation: bool = False,
) -> None:
    """Mean over seeds at each K with its 95% interval as error bars (≥ 3 seeds), joining line.

    ``correlation``: the samples are per-seed Pearson R, summarised in Fisher z (bars in [−1, 1]).
    """
    summaries = np.asarray(
        [scalar_interval(values, correlation=correlation)[:3] for values in samples]
    ).reshape(-1, 3)
    means = summaries[:, 0]
    errors = np.nan_to_num(np.abs(summaries[:, 1:].T - means))
    axes.errorbar(
        np.asarray(shots, dtype=np.float64) * dodge,
        means,
        yerr=errors,
        color=color,
        marker=marker,
        linestyle=linestyle,
        capsize=3,
        markersize=4,
    )


def _fig8_over_epochs(
    top: SubFigure,
    dataset: xr.Dataset,
    series: dict[int, tuple[xr.DataArray, xr.DataArray]],
    shots: list[int],
) -> None:
    """(a) one twin panel per K: gradient coherence and −MSE over epochs."""
    over_epochs = top.subplots(1, len(shots), squeeze=False)[0]
    for axes, k in zip(over_epochs, shots):
        coherence, mse = series[k]
        _twin_panel(
            axes,
            dataset,
            coherence,
            mse,
            left_label="gradient coherence",
            right_label="−MSE",
            right_sign=-1.0,
        )
        axes.set_title(f"K={k}")
        axes.set_xlabel(common.checkpoint_label(dataset))
    top.suptitle("(a) gradient coherence and −MSE during meta-training", fontsize="medium")


def _fig8_finals(
    final_axes: Axes, aligned: dict[int, tuple[xr.DataArray, xr.DataArray]], shots: list[int]
) -> None:
    """(b) final-epoch coherence (left axis) and −MSE (right axis) across K."""
    finals = [_final_values(*aligned[k]) for k in shots]
    sides = (
        ("gradient coherence", _left_color(), "o", "-", 0.97),
        ("−MSE", _right_color(), "s", "--", 1.03),
    )
    axes = final_axes
    for index, (label, color, marker, linestyle, dodge) in enumerate(sides):
        if index:
            axes = final_axes.twinx()
            axes.grid(False)
        values = [final[index] for final in finals]
        _plot_points(
            axes, shots, values, color=color, marker=marker, linestyle=linestyle, dodge=dodge
        )
        panels.colored_y_axis(axes, label, color)
    _k_axis(final_axes, shots)
    final_axes.set_title("(b) at the final epoch, across K")


def _fig8_correlations(
    correlation_axes: Axes, aligned: dict[int, tuple[xr.DataArray, xr.DataArray]], shots: list[int]
) -> None:
    """(c) per-seed Pearson R over epochs, summarised in Fisher z, across K."""
    correlations = [_correlations(*aligned[k]) for k in shots]
    usable = [(k, r) for k, r in zip(shots, correlations) if r.size]
    if usable:
        _plot_points(
            correlation_axes,
            [k for k, _ in usable],
            [r for _, r in usable],
            color=sns.color_palette("colorblind")[2],
            marker="D",
            linestyle="-",
            correlation=True,
        )
        correlation_axes.axhline(0.0, color="0.5", linewidth=0.8)
        _k_axis(correlation_axes, [k for k, _ in usable])
    else:
        correlation_axes.text(
            0.5,
            0.5,
            f"needs ≥ {MIN_EPOCHS_FOR_CORRELATION} epochs per K",
            ha="center",
            va="center",
            transform=correlation_axes.transAxes,
        )
        correlation_axes.set_xticks([])
    correlation_axes.set_ylim(-1.05, 1.05)
    correlation_axes.set_ylabel("Pearson R(coherence, −MSE)")
    correlation_axes.set_title("(c) correlation over epochs, across K")


def draw_fig8(dataset: xr.Dataset) -> Figure:
    """Sinusoid: (a) coherence and −MSE over epochs per K; (b) final values vs K; (c) R vs K."""
    panels.require(dataset, missing_for_fig8)
    variant, algorithm, settings = _fig8_run(dataset)
    shots = [s.shot for s in settings]
    series = {
        s.shot: (
            common.seed_by_epoch(dataset, GRADIENT_COHERENCE, s, algorithm),
            common.seed_by_epoch(dataset, TEST_MSE, s, algorithm),
        )
        for s in settings
    }
    aligned = {k: xr.align(c, m, join="outer") for k, (c, m) in series.items()}
    with common.figure_style():
        columns = max(len(shots), 2)
        figure = common.new_figure(max(3.9 * columns, 8.5), 6.6)
        top, bottom = figure.subfigures(2, 1, height_ratios=[1, 1])
        _fig8_over_epochs(top, dataset, series, shots)
        final_axes, correlation_axes = bottom.subplots(1, 2)
        _fig8_finals(final_axes, aligned, shots)
        _fig8_correlations(correlation_axes, aligned, shots)
        run = common.algorithm_label(algorithm) + ("" if variant == "default" else f" [{variant}]")
        figure.suptitle(f"Gradient coherence and generalization, sinusoid regression, {run}")
        _series_legend(figure, GRADIENT_COHERENCE_LABEL, "−MSE (meta-test target)")
    return figure


FIG5 = FigureSpec(
    name="fig5",
    description="trajectory coherence and meta-test target accuracy vs epoch (twin axes)",
    draw=draw_fig5,
    variables=FIG5_VARIABLES,
    missing=missing_for_fig5,
    needs=(
        Needs(("trajectory_coherence", "accuracy"), kind="classification", roles=("meta-learner",)),
    ),
    title="Trajectory coherence (fig. 5)",
    caption="""\
**Coherence of adaptation trajectories** (the paper's figure 5). The mean cosine similarity
E[θ̂ᵢᵀθ̂ⱼ] of the adaptation directions θ̂ᵢ = (θ̃ᵢ − θs)/‖θ̃ᵢ − θs‖ over pairs of meta-test tasks,
against the meta-test accuracy of the same checkpoints. The paper finds that coherence rises with
accuracy: meta-test solutions that generalize are reached by similar adaptation trajectories.
""",
)
FIG8 = FigureSpec(
    name="fig8",
    description="sinusoid: gradient coherence vs −MSE over epochs and across K, Pearson R",
    draw=draw_fig8,
    variables=FIG8_VARIABLES,
    missing=missing_for_fig8,
    needs=(Needs(("gradient_coherence", "accuracy"), kind="regression", roles=("meta-learner",)),),
    title="Gradient coherence (fig. 8)",
    caption="""\
**Gradient coherence on sinusoid regression** (the paper's figure 8). The mean inner product
E[gᵢᵀgⱼ] of support-loss gradients at the meta-train solution θs over pairs of meta-test tasks
(the paper's measure, drawn; it grows with the gradients' size — the aggregate also holds the
size-free mean cosine E[cos(gᵢ, gⱼ)] as ``gradient_cosine``), against the negative target MSE
after adaptation, for each number of support points k. In the paper the two correlate: where task
gradients agree, adaptation generalizes better.
""",
)

__all__ = ["FIG5", "FIG8", "draw_fig5", "draw_fig8", "missing_for_fig5", "missing_for_fig8"]

SPECS = (FIG5, FIG8)
