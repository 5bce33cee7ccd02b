"""Figure 9: regularized MAML against plain MAML, meta-test target accuracy over epochs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    TEST_ACCURACY,
    TEST_ACCURACY_LABEL,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs, lazy_import
from metalandscape.statistics import mean_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

xr = lazy_import("xarray")

PAIR = ("maml", "regmaml")
MAX_COLUMNS = 3


def regularized_settings(dataset: xr.Dataset) -> list[Setting]:
    """Classification settings where both MAML and regularized MAML have a target accuracy."""
    if common.missing_variables(dataset, [TEST_ACCURACY]) or not set(PAIR) <= set(
        dataset["algorithm"].values.tolist()
    ):
        return []
    return [
        setting
        for setting in panels.classification_settings(dataset, [TEST_ACCURACY], PAIR)
        if common.algorithms_with_data(dataset, setting, [TEST_ACCURACY], PAIR) == list(PAIR)
    ]


def missing_for_fig9(dataset: xr.Dataset) -> str | None:
    """Why Figure 9 cannot be drawn from ``dataset``, or None."""
    if common.missing_variables(dataset, [TEST_ACCURACY]):
        return f"fig9 needs variable {TEST_ACCURACY!r}; the aggregate lacks it"
    if not regularized_settings(dataset):
        algorithms = sorted(dataset["algorithm"].values.tolist())
        return (
            f"fig9 needs maml and regmaml classification runs of the same setting with "
            f"{TEST_ACCURACY!r}; the aggregate has algorithms {algorithms}"
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


def _reduction_box(axes: Axes, final: float, best: float) -> None:
    """The relative error reductions in a box at the panel's lower right."""
    axes.text(
        0.97,
        0.05,
        f"relative error reduction\nfinal epoch: {_percent(final)}\nbest epoch: {_percent(best)}",
        transform=axes.transAxes,
        ha="right",
        va="bottom",
        fontsize="small",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "0.8"},
    )


def draw_fig9(dataset: xr.Dataset) -> Figure:
    """Meta-test accuracy of MAML and regularized MAML vs epoch, with the error reduction."""
    panels.require(dataset, missing_for_fig9)
    settings = regularized_settings(dataset)
    with common.figure_style():
        figure, cells = panels.wrapped_figure(len(settings), MAX_COLUMNS, (4.2, 3.0))
        for axes, setting in zip(cells, settings):
            title = panels.panel_title(setting)
            panels.curves_panel(
                axes, dataset, TEST_ACCURACY, setting, PAIR, TEST_ACCURACY_LABEL, title
            )
            series = [common.seed_by_epoch(dataset, TEST_ACCURACY, setting, a) for a in PAIR]
            _reduction_box(axes, *error_reduction(*series))
        figure.suptitle("Regularizing trajectory coherence: MAML vs regularized MAML")
        panels.bottom_legend(figure, cells)
    return figure


FIG9 = FigureSpec(
    name="fig9",
    description="regularized vs plain MAML: meta-test accuracy vs epoch, relative error reduction",
    draw=draw_fig9,
    variables=(TEST_ACCURACY,),
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

SPECS = (FIG9,)
