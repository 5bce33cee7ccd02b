"""Comparison figure: flatness and coherences against accuracy for every algorithm of a setting.

One block of two rows per setting, one column per landscape measure the aggregate holds (flatness
E[λmax], trajectory coherence, gradient coherence). The top row is the final epoch: each seed of
each algorithm is one point (measure, meta-test accuracy or MSE), the algorithm's seed mean a
large marker. The bottom row is training: the algorithm's seed-mean path through (measure,
accuracy) over the measured epochs, its first epoch hollow and its last filled. Algorithms are
every registered one with values in the setting (meta-learners and baselines), coloured as in
the other figures, so a newly registered algorithm appears without edits.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    ALGORITHM_ORDER,
    FLATNESS,
    GRADIENT_COHERENCE,
    GRADIENT_COHERENCE_LABEL,
    SCORES,
    TEST_ACCURACY,
    TEST_MSE,
    TRAJECTORY_COHERENCE,
    TRAJECTORY_COHERENCE_LABEL,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MEASURES = {
    FLATNESS: r"flatness E[$\lambda_{max}$] at $\tilde\theta_i$",
    TRAJECTORY_COHERENCE: TRAJECTORY_COHERENCE_LABEL,
    GRADIENT_COHERENCE: rf"{GRADIENT_COHERENCE_LABEL} at $\theta_s$",
}


def _panels(dataset: xr.Dataset) -> list[tuple[Setting, list[str]]]:
    """Each setting with a meta-learner's accuracy and some measure, and the measures it has."""
    found: dict[Setting, list[str]] = {}
    for measure in MEASURES:
        for score, _ in SCORES.values():
            for setting in common.settings_with_data(dataset, [measure, score]):
                if setting.score()[0] == score:
                    found.setdefault(setting, []).append(measure)
    return [(setting, found[setting]) for setting in sorted(found)]


def missing_for_comparison(dataset: xr.Dataset) -> str | None:
    """Why the comparison figure cannot be drawn from ``dataset``, or None."""
    if not _panels(dataset):
        return (
            "comparison needs a meta-learner's test accuracy (MSE for sinusoids) and one of "
            f"{list(MEASURES)} in one setting; the aggregate has none"
        )
    return None


def _final_epoch_values(
    dataset: xr.Dataset, setting: Setting, algorithm: str, measure: str, score: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: (measure, score) at the last epoch where both are finite."""
    x = common.seed_by_epoch(dataset, measure, setting, algorithm)
    y = common.seed_by_epoch(dataset, score, setting, algorithm).reindex_like(x)
    xs, ys = [], []
    for seed in x["seed"].values:
        a, b = x.sel(seed=seed).values, y.sel(seed=seed).values
        both = np.flatnonzero(np.isfinite(a) & np.isfinite(b))
        if both.size:
            xs.append(a[both[-1]])
            ys.append(b[both[-1]])
    return np.asarray(xs), np.asarray(ys)


def _mean_path(
    dataset: xr.Dataset, setting: Setting, algorithm: str, measure: str, score: str
) -> tuple[np.ndarray, np.ndarray]:
    """Seed means of (measure, score) at every epoch where both are measured."""
    x = common.seed_by_epoch(dataset, measure, setting, algorithm)
    y = common.seed_by_epoch(dataset, score, setting, algorithm).reindex_like(x)
    with warnings.catch_warnings():  # an epoch no seed measured: NaN, dropped below
        warnings.simplefilter("ignore", RuntimeWarning)
        mx, my = np.nanmean(x.values, axis=0), np.nanmean(y.values, axis=0)
    both = np.isfinite(mx) & np.isfinite(my)
    return mx[both], my[both]


def _draw_final(axes: Axes, dataset: xr.Dataset, setting: Setting, measure: str) -> None:
    score = setting.score()[0]
    for algorithm in common.algorithms_with_data(
        dataset, setting, [measure, score], ALGORITHM_ORDER
    ):
        xs, ys = _final_epoch_values(dataset, setting, algorithm, measure, score)
        color = common.algorithm_color(algorithm)
        axes.scatter(xs, ys, color=color, s=14, alpha=0.55, linewidths=0)
        if xs.size:
            axes.scatter(
                [xs.mean()],
                [ys.mean()],
                color=color,
                s=70,
                marker="D",
                edgecolors="black",
                linewidths=0.6,
                label=common.algorithm_label(algorithm),
                zorder=3,
            )


def _draw_training(axes: Axes, dataset: xr.Dataset, setting: Setting, measure: str) -> None:
    score = setting.score()[0]
    for algorithm in common.algorithms_with_data(
        dataset, setting, [measure, score], ALGORITHM_ORDER
    ):
        xs, ys = _mean_path(dataset, setting, algorithm, measure, score)
        if not xs.size:
            continue
        color = common.algorithm_color(algorithm)
        axes.plot(xs, ys, color=color, linewidth=1.3, marker="o", markersize=2.5, alpha=0.85)
        axes.scatter(xs[:1], ys[:1], s=40, facecolors="white", edgecolors=[color], zorder=3)
        axes.scatter(xs[-1:], ys[-1:], s=55, color=color, edgecolors="black", zorder=3)


def _setting_block(
    rows: tuple[list[Axes], list[Axes]],
    dataset: xr.Dataset,
    setting: Setting,
    measures: list[str],
) -> None:
    """One setting: each of ``measures``' final-epoch scatter (top row) above its training
    paths (bottom row); the columns beyond ``measures`` are hidden."""
    final_row, training_row = rows
    score_label = setting.score()[1]
    for column, (final, training) in enumerate(zip(final_row, training_row)):
        if column >= len(measures):
            final.set_visible(False)
            training.set_visible(False)
            continue
        measure = measures[column]
        _draw_final(final, dataset, setting, measure)
        _draw_training(training, dataset, setting, measure)
        where = f"{setting.title}\n" if column == 0 else ""
        final.set_title(f"{where}final epoch", loc="left")
        training.set_title(f"{where}over training", loc="left")
        for axes in (final, training):
            axes.set_xlabel(MEASURES[measure])
            axes.set_ylabel(score_label if column == 0 else "")


def _legend(figure: Figure, shown: set[str]) -> None:
    """The algorithms' seed-mean diamonds and the first and last epoch of a training path."""
    handles = panels.algorithm_handles(
        [a for a in ALGORITHM_ORDER if a in shown],
        marker="D",
        linestyle="",
        markersize=7,
        markeredgecolor="black",
    )
    handles += [
        panels.legend_line(
            "first measured epoch", "0.4", marker="o", markerfacecolor="white", ls="-"
        ),
        panels.legend_line("last epoch", "0.4", marker="o", linestyle="-"),
    ]
    panels.figure_legend(figure, handles, ncols=min(len(handles), math.ceil(len(handles) / 2) + 1))


def draw_comparison(dataset: xr.Dataset) -> Figure:
    """Per setting: final-epoch scatter and training paths of each measure against accuracy."""
    panels.require(dataset, missing_for_comparison)
    blocks = _panels(dataset)
    columns = max(len(measures) for _, measures in blocks)
    with common.figure_style():
        figure = common.new_figure(max(3.7 * columns, 7.0), 0.9 + 5.4 * len(blocks))
        grid = figure.subplots(2 * len(blocks), columns, squeeze=False)
        shown: set[str] = set()
        for block, (setting, measures) in enumerate(blocks):
            score = setting.score()[0]
            shown.update(common.algorithms_with_data(dataset, setting, [score], ALGORITHM_ORDER))
            rows = (list(grid[2 * block]), list(grid[2 * block + 1]))
            _setting_block(rows, dataset, setting, measures)
        _legend(figure, shown)
        figure.suptitle("Flatness and coherence against accuracy, all algorithms of a setting")
    return figure


COMPARISON = FigureSpec(
    name="comparison",
    description="flatness and coherences against accuracy, every algorithm of a setting",
    draw=draw_comparison,
    variables=(TEST_ACCURACY,),
    missing=missing_for_comparison,
    optional_variables=(*MEASURES, TEST_MSE),
    needs=tuple(
        Needs(("accuracy", metric), roles=("meta-learner",))
        for metric in ("hessian", "trajectory_coherence", "gradient_coherence")
    ),
    title="Algorithms compared (flatness, coherence, accuracy)",
    caption="""\
**Algorithms compared.** For each setting, every algorithm's meta-test target accuracy (MSE for
sinusoids) against each landscape measure the run was measured with: flatness E[λmax] of the
adapted solutions, trajectory coherence and gradient coherence. Top row: the final epoch, one
small point per seed and the seed mean as a diamond. Bottom row: the seed-mean path over the
measured epochs (hollow: first, filled: last). Each algorithm is measured after its own
adaptation (ANIL: head only, so its trajectory coherence lives in the head's parameters;
Meta-SGD: its learned step sizes; Reptile and the baseline: gradient descent as MAML's).
""",
)

__all__ = ["COMPARISON", "draw_comparison", "missing_for_comparison"]

SPECS = (COMPARISON,)
