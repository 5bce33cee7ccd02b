"""Figure 10: meta-train and meta-test target accuracy of every meta-learner (the paper: MAML and
First-Order MAML)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from metalandscape.figures import FigureError
from metalandscape.figures.common import (
    META_LEARNERS,
    algorithm_color,
    algorithm_label,
    algorithms_with_data,
    checkpoint_axis,
    checkpoint_label,
    figure_style,
    missing_variables,
    new_figure,
    plot_seed_band,
)
from metalandscape.figures.overtraining import (
    classification_settings,
    panel_title,
    wrapped_axes,
)
from metalandscape.figures.spec import FigureSpec, Needs

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

TRAIN_ACCURACY = "train_target_accuracy_mean"
TEST_ACCURACY = "test_target_accuracy_mean"
FIG10_VARIABLES = (TRAIN_ACCURACY, TEST_ACCURACY)
ALGORITHMS = META_LEARNERS
SPLITS = ((TRAIN_ACCURACY, "meta-train", "--", "s"), (TEST_ACCURACY, "meta-test", "-", "o"))
MAX_COLUMNS = 3


def missing_for_fig10(dataset: xr.Dataset) -> str | None:
    """Why Figure 10 cannot be drawn from ``dataset``, or None."""
    lacking = missing_variables(dataset, FIG10_VARIABLES)
    if lacking:
        return (
            f"fig10 needs variables {list(FIG10_VARIABLES)} (accuracy splits test and train); "
            f"the aggregate lacks {lacking}"
        )
    if not classification_settings(dataset, FIG10_VARIABLES, ALGORITHMS):
        return "fig10 needs meta-learner classification runs with both accuracies"
    return None


def draw_fig10(dataset: xr.Dataset) -> Figure:
    """Meta-train (dashed) and meta-test (solid) target accuracy vs epoch per setting."""
    from matplotlib.lines import Line2D

    reason = missing_for_fig10(dataset)
    if reason:
        raise FigureError(reason)
    settings = classification_settings(dataset, FIG10_VARIABLES, ALGORITHMS)
    columns = min(len(settings), MAX_COLUMNS)
    rows = math.ceil(len(settings) / columns)
    shown: set[str] = set()
    with figure_style():
        figure = new_figure(max(3.8 * columns, 6.5), 0.9 + 2.9 * rows)
        for axes, setting in zip(wrapped_axes(figure, len(settings), columns), settings):
            for algorithm in algorithms_with_data(dataset, setting, FIG10_VARIABLES, ALGORITHMS):
                shown.add(algorithm)
                for variable, _, linestyle, marker in SPLITS:
                    plot_seed_band(
                        axes,
                        dataset,
                        variable,
                        setting,
                        algorithm,
                        color=algorithm_color(algorithm),
                        linestyle=linestyle,
                        marker=marker,
                    )
            axes.set_title(panel_title(setting))
            axes.set_ylabel("target accuracy")
            axes.set_xlabel(checkpoint_label(dataset))
            checkpoint_axis(axes, dataset)
        handles = [
            Line2D([], [], color=algorithm_color(a), linewidth=3, label=algorithm_label(a))
            for a in ALGORITHMS
            if a in shown
        ]
        handles += [
            Line2D([], [], color="0.3", ls=style, marker=marker, markersize=3.5, label=label)
            for _, label, style, marker in SPLITS
        ]
        figure.legend(
            handles=handles, loc="outside lower center", ncols=len(handles), frameon=False
        )
        figure.suptitle("Meta-train and meta-test target accuracy during meta-training")
    return figure


FIG10 = FigureSpec(
    name="fig10",
    description="meta-train and meta-test target accuracy vs epoch, every meta-learner",
    draw=draw_fig10,
    variables=FIG10_VARIABLES,
    missing=missing_for_fig10,
    needs=(
        Needs(
            ("accuracy",),
            kind="classification",
            roles=("meta-learner",),
            accuracy_splits=("train", "test"),
        ),
    ),
    title="Meta-train and meta-test accuracy (fig. 10)",
    caption="""\
**Meta-train and meta-test accuracy** (the paper's figure 10). The target accuracy after
adaptation on meta-train tasks (dashed) and on meta-test tasks (solid) of every meta-learner
(the paper: MAML and First-Order MAML) in each setting against the epoch (mean ± 95% CI over seeds): how far meta-training
fits its own tasks beyond what carries over to new ones.
""",
)

__all__ = ["FIG10", "draw_fig10", "missing_for_fig10"]
