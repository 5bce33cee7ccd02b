"""Figure 2: flatness E[λmax] of the meta-test solutions over meta-training epochs, read
against the inner step's stability limit 2/α (and beside λmax at θs where it was measured)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    FLATNESS,
    TEST_ACCURACY,
    TEST_MSE,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FLATNESS_LABEL = r"E[$\lambda_{\max}$] (meta-test)"
#: λmax at the start θs (the hessian metric's ``at: [start]``), drawn dashed beside θ̃'s.
START_FLATNESS = "hessian_start_top_eigenvalue_mean"
MAX_COLUMNS = 3


def missing_for_fig2(dataset: xr.Dataset) -> str | None:
    """Why Figure 2 cannot be drawn from ``dataset``, or None."""
    lacking = common.missing_variables(dataset, [FLATNESS])
    if lacking:
        return f"fig2 needs variable {FLATNESS!r} (metric 'hessian'); the aggregate lacks it"
    if not common.settings_with_data(dataset, [FLATNESS]):
        return f"fig2 needs {FLATNESS!r} of a meta-learner run; the aggregate has no such values"
    return None


def _context_variable(dataset: xr.Dataset, setting: Setting) -> tuple[str, str] | None:
    variable, label = setting.score()
    if variable in dataset.data_vars and common.algorithms_with_data(dataset, setting, [variable]):
        return variable, label
    return None


def _setting_column(
    column: list[Axes],
    dataset: xr.Dataset,
    setting: Setting,
    context: tuple[str, str] | None,
) -> None:
    """One setting: E[λmax] on top and, with a second axes, the context variable below it."""
    flatness_axes = column[0]
    drawn = common.algorithms_with_data(dataset, setting, [FLATNESS])
    panels.curves_panel(
        flatness_axes,
        dataset,
        FLATNESS,
        setting,
        drawn,
        FLATNESS_LABEL,
        setting.title,
        xlabel=False,
    )
    if START_FLATNESS in dataset.data_vars:
        at_start = common.algorithms_with_data(dataset, setting, [START_FLATNESS])
        panels.algorithm_curves(
            flatness_axes,
            dataset,
            START_FLATNESS,
            setting,
            at_start,
            label=lambda a: f"{common.algorithm_label(a)} at θs",
            linestyle="--",
            marker="x",
        )
    panels.stability_lines(flatness_axes, dataset, setting, drawn)
    last_axes = flatness_axes
    if len(column) == 2:
        context_axes = column[1]
        context_axes.sharex(flatness_axes)
        flatness_axes.tick_params(labelbottom=False)
        if context is None:
            context_axes.set_axis_off()
        else:
            variable, label = context
            drawn = common.algorithms_with_data(dataset, setting, [variable])
            panels.curves_panel(
                context_axes, dataset, variable, setting, drawn, label, xlabel=False, marker="s"
            )
            last_axes = context_axes
    last_axes.set_xlabel(common.checkpoint_label(dataset))


def draw_fig2(dataset: xr.Dataset) -> Figure:
    """E[λmax] vs epoch per setting and MAML-family algorithm; target accuracy below it."""
    panels.require(dataset, missing_for_fig2)
    settings = common.settings_with_data(dataset, [FLATNESS])
    contexts = {setting: _context_variable(dataset, setting) for setting in settings}
    rows_per_block = 2 if any(contexts.values()) else 1
    columns = min(len(settings), MAX_COLUMNS)
    blocks = math.ceil(len(settings) / columns)
    with common.figure_style():
        figure = common.new_figure(max(3.6 * columns, 6.5), 0.6 + 2.6 * rows_per_block * blocks)
        grid = figure.subplots(rows_per_block * blocks, columns, squeeze=False)
        for position in range(blocks * columns):
            block, column = divmod(position, columns)
            cells = list(grid[block * rows_per_block : (block + 1) * rows_per_block, column])
            if position < len(settings):
                setting = settings[position]
                _setting_column(cells, dataset, setting, contexts[setting])
            else:
                for axes in cells:
                    axes.set_axis_off()
        figure.suptitle("Flatness of meta-test solutions during meta-training")
        flatness_rows = grid[::rows_per_block].ravel().tolist()
        panels.bottom_legend(figure, flatness_rows[: len(settings)], max_columns=2)
    return figure


FIG2 = FigureSpec(
    name="fig2",
    description="flatness E[λmax] (and meta-test target accuracy) vs epoch, MAML-family",
    draw=draw_fig2,
    variables=(FLATNESS,),
    optional_variables=(TEST_ACCURACY, TEST_MSE),
    missing=missing_for_fig2,
    needs=(Needs(("hessian",), roles=("meta-learner",)),),
    title="Flatness (fig. 2)",
    caption="""\
**Flatness over meta-training** (the paper's figure 2). For MAML and First-Order MAML, the mean
top eigenvalue E[λmax] of the support-loss Hessian at the task-adapted parameters θ̃ᵢ of meta-test
tasks, against the training epoch, beside the meta-test accuracy. In the paper the adapted
solutions get flatter (λmax falls) while accuracy rises, and keep getting flatter even when
meta-test accuracy no longer improves: flatness alone does not explain generalization. The dotted
line is each run's 2/α: T steps of gradient descent with step α cannot settle where the curvature
exceeds 2/α, so while adaptation still leaves a high support loss, λmax at θ̃ᵢ is held near that
line by the inner step, not by what meta-training learned. Where the hessian metric also measured
the start (``at: [adapted, start]``), λmax at θs is drawn dashed.
""",
)

SPECS = (FIG2,)
