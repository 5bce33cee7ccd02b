"""Figure 10: meta-train and meta-test target accuracy of every meta-learner (the paper: MAML and
First-Order MAML)."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    META_LEARNERS,
    TEST_ACCURACY,
    TRAIN_ACCURACY,
)
from metalandscape.figures.spec import FigureSpec, Needs

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

FIG10_VARIABLES = (TRAIN_ACCURACY, TEST_ACCURACY)
ALGORITHMS = META_LEARNERS
SPLITS = ((TRAIN_ACCURACY, "meta-train", "--", "s"), (TEST_ACCURACY, "meta-test", "-", "o"))
MAX_COLUMNS = 3


def missing_for_fig10(dataset: xr.Dataset) -> str | None:
    """Why Figure 10 cannot be drawn from ``dataset``, or None."""
    lacking = common.missing_variables(dataset, FIG10_VARIABLES)
    if lacking:
        return (
            f"fig10 needs variables {list(FIG10_VARIABLES)} (accuracy splits test and train); "
            f"the aggregate lacks {lacking}"
        )
    if not panels.classification_settings(dataset, FIG10_VARIABLES, ALGORITHMS):
        return "fig10 needs meta-learner classification runs with both accuracies"
    return None


def _unnamed(_algorithm: str) -> None:
    """No legend entry: the legend names algorithms by colour and splits by line style."""
    return None


def draw_fig10(dataset: xr.Dataset) -> Figure:
    """Meta-train (dashed) and meta-test (solid) target accuracy vs epoch per setting."""
    panels.require(dataset, missing_for_fig10)
    settings = panels.classification_settings(dataset, FIG10_VARIABLES, ALGORITHMS)
    shown: set[str] = set()
    with common.figure_style():
        figure, cells = panels.wrapped_figure(len(settings), MAX_COLUMNS, (3.8, 2.9))
        for axes, setting in zip(cells, settings):
            drawn = common.algorithms_with_data(dataset, setting, FIG10_VARIABLES, ALGORITHMS)
            shown.update(drawn)
            for algorithm, (variable, _, linestyle, marker) in itertools.product(drawn, SPLITS):
                style = {"linestyle": linestyle, "marker": marker}
                panels.algorithm_curves(
                    axes, dataset, variable, setting, [algorithm], _unnamed, **style
                )
            panels.checkpoint_panel(axes, dataset, "target accuracy", panels.panel_title(setting))
        handles = panels.algorithm_handles([a for a in ALGORITHMS if a in shown], linewidth=3)
        handles += [
            panels.legend_line(label, ls=style, marker=marker, markersize=3.5)
            for _, label, style, marker in SPLITS
        ]
        panels.figure_legend(figure, handles, ncols=len(handles))
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

SPECS = (FIG10,)
