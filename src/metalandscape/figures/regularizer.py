"""Figure 9: regularized MAML against plain MAML, meta-test target accuracy over epochs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.figures import FigureError
from metalandscape.figures.common import (
    Setting,
    algorithm_color,
    algorithm_label,
    algorithms_with_data,
    checkpoint_axis,
    checkpoint_label,
    checkpoint_x,
    figure_style,
    missing_variables,
    new_figure,
    plot_mean_band,
    seed_by_epoch,
    variable_bounds,
)
from metalandscape.figures.overtraining import (
    bottom_legend,
    classification_settings,
    panel_title,
    wrapped_axes,
)
from metalandscape.figures.spec import FigureSpec, Needs, lazy_import
from metalandscape.statistics import mean_interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

xr = lazy_import("xarray")

ACCURACY = "test_target_accuracy_mean"
PAIR = ("maml", "regmaml")
MAX_COLUMNS = 3


def regularized_settings(dataset: xr.Dataset) -> list[Setting]:
    """Classification settings where both MAML and regularized MAML have a target accuracy."""
    if missing_variables(dataset, [ACCURACY]) or not set(PAIR) <= set(
        dataset["algorithm"].values.tolist()
    ):
        return []
    return [
        setting
        for setting in classification_settings(dataset, [ACCURACY], PAIR)
        if algorithms_with_data(dataset, setting, [ACCURACY], PAIR) == list(PAIR)
    ]


def missing_for_fig9(dataset: xr.Dataset) -> str | None:
    """Why Figure 9 cannot be drawn from ``dataset``, or None."""
    if missing_variables(dataset, [ACCURACY]):
        return f"fig9 needs variable {ACCURACY!r}; the aggregate lacks it"
    if not regularized_settings(dataset):
        algorithms = sorted(dataset["algorithm"].values.tolist())
        return (
            f"fig9 needs maml and regmaml classification runs of the same setting with "
            f"{ACCURACY!r}; the aggregate has algorithms {algorithms}"
        )
    return None


def error_reduction(plain: xr.DataArray, regularized: xr.DataArray) -> tuple[float, float]:
    """(err_maml − err_reg)/err_maml of the seed-mean accuracy at the final and the best epoch.

    The final epoch is the last one both measured; the best is each method's best mean.
    """
    plain, regularized = xr.align(plain, regularized, join="inner")
    plain_mean = mean_interval(plain.values).mean
    regularized_mean = mean_interval(regularized.values).mean
    both = np.flatnonzero(np.isfinite(plain_mean) & np.isfinite(regularized_mean))
    if both.size == 0:
        return math.nan, math.nan

    def reduction(plain_accuracy: float, regularized_accuracy: float) -> float:
        plain_error = 1.0 - plain_accuracy
        if plain_error <= 0:
            return math.nan
        return (plain_error - (1.0 - regularized_accuracy)) / plain_error

    final = reduction(plain_mean[both[-1]], regularized_mean[both[-1]])
    best = reduction(np.nanmax(plain_mean[both]), np.nanmax(regularized_mean[both]))
    return final, best


def _percent(value: float) -> str:
    return f"{100 * value:+.1f}%" if math.isfinite(value) else "n/a"


def draw_fig9(dataset: xr.Dataset) -> Figure:
    """Meta-test accuracy of MAML and regularized MAML vs epoch, with the error reduction."""
    reason = missing_for_fig9(dataset)
    if reason:
        raise FigureError(reason)
    settings = regularized_settings(dataset)
    columns = min(len(settings), MAX_COLUMNS)
    rows = math.ceil(len(settings) / columns)
    with figure_style():
        figure = new_figure(max(4.2 * columns, 6.5), 0.9 + 3.0 * rows)
        panels = wrapped_axes(figure, len(settings), columns)
        for axes, setting in zip(panels, settings):
            series = {a: seed_by_epoch(dataset, ACCURACY, setting, a) for a in PAIR}
            for algorithm, data in series.items():
                plot_mean_band(
                    axes,
                    checkpoint_x(data),
                    data.values,
                    bounds=variable_bounds(ACCURACY),
                    color=algorithm_color(algorithm),
                    label=algorithm_label(algorithm),
                )
            final, best = error_reduction(*series.values())
            axes.text(
                0.97,
                0.05,
                f"relative error reduction\nfinal epoch: {_percent(final)}\n"
                f"best epoch: {_percent(best)}",
                transform=axes.transAxes,
                ha="right",
                va="bottom",
                fontsize="small",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
            )
            axes.set_title(panel_title(setting))
            axes.set_ylabel("meta-test target accuracy")
            axes.set_xlabel(checkpoint_label(dataset))
            checkpoint_axis(axes, dataset)
        figure.suptitle("Regularizing trajectory coherence: MAML vs regularized MAML")
        bottom_legend(figure, panels)
    return figure


FIG9 = FigureSpec(
    name="fig9",
    description="regularized vs plain MAML: meta-test accuracy vs epoch, relative error reduction",
    draw=draw_fig9,
    variables=(ACCURACY,),
    missing=missing_for_fig9,
    needs=(Needs(("accuracy",), kind="classification", algorithms=PAIR, together=True),),
    title="Regularized MAML (fig. 9)",
    caption="""\
**Regularizing trajectory coherence** (the paper's figure 9). Meta-test target accuracy of MAML
and of MAML with the coherence regularizer on the same setting against the epoch (mean ± 95% CI
over seeds). The box gives the relative error reduction (err_MAML − err_reg)/err_MAML of the
seed-mean accuracy at the final epoch and at each method's best epoch.
""",
)

__all__ = ["FIG9", "draw_fig9", "error_reduction", "missing_for_fig9"]
