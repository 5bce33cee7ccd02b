"""Figure 2: flatness E[λmax] of the meta-test solutions over meta-training epochs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from metalandscape.figures import FigureError
from metalandscape.figures.common import (
    Setting,
    algorithm_color,
    algorithm_label,
    algorithms_with_data,
    checkpoint_axis,
    checkpoint_label,
    figure_style,
    missing_variables,
    new_figure,
    plot_seed_band,
    settings_with_data,
)
from metalandscape.figures.spec import FigureSpec, Needs

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

FLATNESS = "hessian_top_eigenvalue_mean"
CONTEXT_VARIABLES = {
    "classification": ("test_target_accuracy_mean", "meta-test target accuracy"),
    "regression": ("test_target_mse_mean", "meta-test target MSE"),
}
MAX_COLUMNS = 3


def missing_for_fig2(dataset: xr.Dataset) -> str | None:
    """Why Figure 2 cannot be drawn from ``dataset``, or None."""
    lacking = missing_variables(dataset, [FLATNESS])
    if lacking:
        return f"fig2 needs variable {FLATNESS!r} (metric 'hessian'); the aggregate lacks it"
    if not settings_with_data(dataset, [FLATNESS]):
        return f"fig2 needs {FLATNESS!r} of a meta-learner run; the aggregate has no such values"
    return None


def _context_variable(dataset: xr.Dataset, setting: Setting) -> tuple[str, str] | None:
    kind = "regression" if setting.dataset == "sinusoid" else "classification"
    variable, label = CONTEXT_VARIABLES[kind]
    if variable in dataset.data_vars and algorithms_with_data(dataset, setting, [variable]):
        return variable, label
    return None


def draw_fig2(dataset: xr.Dataset) -> Figure:
    """E[λmax] vs epoch per setting and MAML-family algorithm; target accuracy below it."""
    reason = missing_for_fig2(dataset)
    if reason:
        raise FigureError(reason)
    settings = settings_with_data(dataset, [FLATNESS])
    contexts = {setting: _context_variable(dataset, setting) for setting in settings}
    rows_per_block = 2 if any(contexts.values()) else 1
    columns = min(len(settings), MAX_COLUMNS)
    blocks = math.ceil(len(settings) / columns)
    with figure_style():
        figure = new_figure(max(3.6 * columns, 6.5), 0.6 + 2.6 * rows_per_block * blocks)
        grid = figure.subplots(rows_per_block * blocks, columns, squeeze=False)
        shown: dict[str, object] = {}
        for position, setting in enumerate(settings):
            block, column = divmod(position, columns)
            flatness_axes = grid[block * rows_per_block, column]
            for algorithm in algorithms_with_data(dataset, setting, [FLATNESS]):
                plot_seed_band(
                    flatness_axes,
                    dataset,
                    FLATNESS,
                    setting,
                    algorithm,
                    color=algorithm_color(algorithm),
                    label=algorithm_label(algorithm),
                )
            flatness_axes.set_title(setting.title)
            flatness_axes.set_ylabel(r"E[$\lambda_{\max}$] (meta-test)")
            checkpoint_axis(flatness_axes, dataset)
            for handle, label in zip(*flatness_axes.get_legend_handles_labels()):
                shown.setdefault(label, handle)
            last_axes = flatness_axes
            if rows_per_block == 2:
                context_axes = grid[block * rows_per_block + 1, column]
                context_axes.sharex(flatness_axes)
                flatness_axes.tick_params(labelbottom=False)
                context = contexts[setting]
                if context is None:
                    context_axes.set_axis_off()
                else:
                    variable, label = context
                    for algorithm in algorithms_with_data(dataset, setting, [variable]):
                        plot_seed_band(
                            context_axes,
                            dataset,
                            variable,
                            setting,
                            algorithm,
                            color=algorithm_color(algorithm),
                            label=algorithm_label(algorithm),
                            marker="s",
                        )
                    context_axes.set_ylabel(label)
                    checkpoint_axis(context_axes, dataset)
                    last_axes = context_axes
            last_axes.set_xlabel(checkpoint_label(dataset))
        for position in range(len(settings), blocks * columns):
            block, column = divmod(position, columns)
            for row in range(rows_per_block):
                grid[block * rows_per_block + row, column].set_axis_off()
        figure.suptitle("Flatness of meta-test solutions during meta-training")
        figure.legend(
            list(shown.values()),
            list(shown.keys()),
            loc="outside lower center",
            ncols=len(shown),
            frameon=False,
        )
    return figure


FIG2 = FigureSpec(
    name="fig2",
    description="flatness E[λmax] (and meta-test target accuracy) vs epoch, MAML-family",
    draw=draw_fig2,
    variables=(FLATNESS,),
    optional_variables=("test_target_accuracy_mean", "test_target_mse_mean"),
    missing=missing_for_fig2,
    needs=(Needs(("hessian",), roles=("meta-learner",)),),
    title="Flatness (fig. 2)",
    caption="""\
**Flatness over meta-training** (the paper's figure 2). For MAML and First-Order MAML, the mean
top eigenvalue E[λmax] of the support-loss Hessian at the task-adapted parameters θ̃ᵢ of meta-test
tasks, against the training epoch, beside the meta-test accuracy. In the paper the adapted
solutions get flatter (λmax falls) while accuracy rises, and keep getting flatter even when
meta-test accuracy no longer improves: flatness alone does not explain generalization.
""",
)
