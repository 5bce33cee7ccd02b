"""Figures 7, 11 and 12: coherence against meta-test target accuracy, one line per seed.

Each panel is one run kind (setting and algorithm): a seed's checkpoints over epochs as a line
from coherence (x) to accuracy (y), its last epoch starred, and the mean over seeds of the
per-seed Pearson R over epochs (averaged in Fisher z) printed in the corner.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    GRADIENT_COHERENCE,
    GRADIENT_COHERENCE_LABEL,
    MIN_EPOCHS_FOR_CORRELATION,
    TEST_ACCURACY,
    TEST_ACCURACY_LABEL,
    TRAJECTORY_COHERENCE,
    TRAJECTORY_COHERENCE_LABEL,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs, lazy_import
from metalandscape.statistics import per_seed_correlation, scalar_interval

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

sns = lazy_import("seaborn")
xr = lazy_import("xarray")

ONE_STEP_VARIANTS = ("T1",)
MAX_COLUMNS = 4
COHERENCE_LABELS = {
    GRADIENT_COHERENCE: rf"{GRADIENT_COHERENCE_LABEL} at $\theta_s$",
    TRAJECTORY_COHERENCE: TRAJECTORY_COHERENCE_LABEL,
}

Panel = tuple[Setting, str]


def _panels(dataset: xr.Dataset, coherence: str) -> list[Panel]:
    """Every (classification setting, MAML-family algorithm) with coherence and accuracy."""
    variables = [coherence, TEST_ACCURACY]
    if common.missing_variables(dataset, variables):
        return []
    return [
        (setting, algorithm)
        for setting in panels.classification_settings(dataset, variables)
        for algorithm in common.algorithms_with_data(dataset, setting, variables)
    ]


def _fig7_panels(dataset: xr.Dataset) -> list[Panel]:
    """The T = 1 settings (all settings when no variant is T1), first algorithm of each."""
    every = _panels(dataset, GRADIENT_COHERENCE)
    one_step = [p for p in every if p[0].variant in ONE_STEP_VARIANTS]
    chosen = one_step or every
    first: dict[Setting, str] = {}
    for setting, algorithm in chosen:
        first.setdefault(setting, algorithm)
    return list(first.items())


def _missing(name: str, dataset: xr.Dataset, coherence: str) -> str | None:
    lacking = common.missing_variables(dataset, [coherence, TEST_ACCURACY])
    if lacking:
        return f"{name} needs variables {[coherence, TEST_ACCURACY]}; the aggregate lacks {lacking}"
    if not _panels(dataset, coherence):
        return (
            f"{name} needs classification runs of a MAML-family method with finite "
            f"{coherence} and {TEST_ACCURACY}; the aggregate has none"
        )
    return None


def mean_seed_correlation(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson R over epochs per seed (rows), averaged in Fisher z; NaN when no seed has one."""
    per_seed = [per_seed_correlation(seed_x, seed_y) for seed_x, seed_y in zip(x, y)]
    return scalar_interval(np.asarray(per_seed), correlation=True)[0]


def _seed_lines(
    axes: Axes, coherence: xr.DataArray, accuracy: xr.DataArray, seeds: list[int]
) -> str:
    """Draw one line per seed; returns the R line for the panel title (never over the data)."""
    coherence, accuracy = xr.align(coherence, accuracy, join="inner")
    colors = sns.color_palette("colorblind", max(len(seeds), 1))
    for seed, x, y in zip(coherence["seed"].values.tolist(), coherence.values, accuracy.values):
        color = colors[seeds.index(seed) % len(colors)]
        both = np.isfinite(x) & np.isfinite(y)
        if not both.any():
            continue
        axes.plot(x[both], y[both], color=color, marker="o", markersize=3, linewidth=1.2)
        axes.plot(x[both][-1], y[both][-1], color=color, marker="*", markersize=10, ls="none")
    r = mean_seed_correlation(coherence.values, accuracy.values)
    return (
        f"R = {r:.2f}"
        if math.isfinite(r)
        else f"R undefined (< {MIN_EPOCHS_FOR_CORRELATION} epochs or constant)"
    )


def draw_coherence_accuracy(
    dataset: xr.Dataset, run_kinds: Sequence[Panel], coherence: str, title: str
) -> Figure:
    """Small multiples of accuracy against ``coherence``, one line per seed over epochs."""
    seeds = dataset["seed"].values.tolist()
    with common.figure_style():
        size = (3.6, 3.1)
        figure, grid = panels.wrapped_figure(
            len(run_kinds), MAX_COLUMNS, size, min_width=8.0, margin=1.0
        )
        for axes, (setting, algorithm) in zip(grid, run_kinds):
            r_text = _seed_lines(
                axes,
                common.seed_by_epoch(dataset, coherence, setting, algorithm),
                common.seed_by_epoch(dataset, TEST_ACCURACY, setting, algorithm),
                seeds,
            )
            axes.set_title(
                panels.panel_title(setting, f", {common.algorithm_label(algorithm)}")
                + f"\n{r_text}"
            )
            axes.set_xlabel(COHERENCE_LABELS[coherence])
            axes.set_ylabel(TEST_ACCURACY_LABEL)
        colors = sns.color_palette("colorblind", max(len(seeds), 1))
        handles = [
            panels.legend_line(f"seed {s}", c, marker="o", markersize=3)
            for c, s in zip(colors, seeds)
        ]
        handles.append(panels.legend_line("last epoch", marker="*", markersize=9, ls="none"))
        panels.figure_legend(figure, handles, ncols=min(len(handles), 6))
        figure.suptitle(title)
    return figure


def _coherence_spec(
    name: str,
    coherence: str,
    heading: str,
    *,
    run_kinds: Callable[[xr.Dataset], list[Panel]] | None = None,
    description: str,
    title: str,
    caption: str,
) -> FigureSpec:
    """A figure of accuracy against ``coherence`` (also its metric's name), headed ``heading``,
    with the report's ``description``, ``title`` and ``caption``.

    ``run_kinds`` chooses the panels (default: every run kind with ``coherence`` and accuracy).
    """

    def missing(dataset: xr.Dataset) -> str | None:
        return _missing(name, dataset, coherence)

    def draw(dataset: xr.Dataset) -> Figure:
        panels.require(dataset, missing)
        chosen = run_kinds(dataset) if run_kinds else _panels(dataset, coherence)
        return draw_coherence_accuracy(dataset, chosen, coherence, heading)

    return FigureSpec(
        name=name,
        draw=draw,
        variables=(coherence, TEST_ACCURACY),
        missing=missing,
        needs=(Needs((coherence, "accuracy"), kind="classification", roles=("meta-learner",)),),
        description=description,
        title=title,
        caption=caption,
    )


FIG7 = _coherence_spec(
    "fig7",
    GRADIENT_COHERENCE,
    "Gradient coherence and generalization over meta-training (one inner step)",
    run_kinds=_fig7_panels,
    description="gradient coherence at θs vs meta-test accuracy, T=1 models, one line per seed",
    title="Gradient coherence, T = 1 (fig. 7)",
    caption="""\
**Gradient coherence and generalization with one inner step** (the paper's figure 7). For models
meta-trained with T = 1 inner step (variant ``T1``; in a grid without it, every MAML-family
classification setting), the gradient coherence E[gᵢᵀgⱼ] at the meta-train solution θs against
the meta-test target accuracy of the same checkpoint: one line per seed over the epochs, the last
epoch starred, and R the mean over seeds of the Pearson correlation over epochs. The raw inner
product grows with the gradients' size; the aggregate also holds the size-free mean cosine
E[cos(gᵢ, gⱼ)] (``gradient_cosine``) for the same pairs.
""",
)
FIG11 = _coherence_spec(
    "fig11",
    TRAJECTORY_COHERENCE,
    "Trajectory coherence and meta-test accuracy, every setting",
    description="trajectory coherence vs meta-test accuracy, every setting, one line per seed",
    title="Trajectory coherence, every setting (fig. 11)",
    caption="""\
**Trajectory coherence against accuracy, every setting** (the paper's figure 11, the full set
behind figure 5). For each setting and MAML-family algorithm, the trajectory coherence
E[θ̂ᵢᵀθ̂ⱼ] against the meta-test target accuracy: one line per seed over the epochs, the last
epoch starred, and R the mean over seeds of the Pearson correlation over epochs.
""",
)
FIG12 = _coherence_spec(
    "fig12",
    GRADIENT_COHERENCE,
    "Gradient coherence and meta-test accuracy, every setting",
    description="gradient coherence at θs vs meta-test accuracy, every setting, one line per seed",
    title="Gradient coherence, every setting (fig. 12)",
    caption="""\
**Gradient coherence against accuracy, every setting** (the paper's figure 12, the appendix
version of figure 7). For each setting and MAML-family algorithm, the gradient coherence
E[gᵢᵀgⱼ] at θs against the meta-test target accuracy: one line per seed over the epochs, the
last epoch starred, and R the mean over seeds of the Pearson correlation over epochs. The raw inner
product grows with the gradients' size; the aggregate also holds the size-free mean cosine
E[cos(gᵢ, gⱼ)] (``gradient_cosine``) for the same pairs.
""",
)

SPECS = (FIG7, FIG11, FIG12)
draw_fig7, draw_fig11, draw_fig12 = (spec.draw for spec in SPECS)
missing_for_fig7, missing_for_fig11, missing_for_fig12 = (spec.missing for spec in SPECS)

__all__ = [
    "FIG7",
    "FIG11",
    "FIG12",
    "draw_fig7",
    "draw_fig11",
    "draw_fig12",
    "mean_seed_correlation",
    "missing_for_fig7",
    "missing_for_fig11",
    "missing_for_fig12",
]
