"""Figures 3 and 4: target accuracy, support loss and curvature over epochs.

Figure 3 shows the overtraining runs (variant ``long``), Figure 4 the finetune baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from metalandscape.figures import FigureError
from metalandscape.figures.common import (
    BASELINES,
    META_LEARNERS,
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
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ACCURACY = "test_target_accuracy_mean"
SUPPORT_LOSS = "support_loss_mean"
FLATNESS = "hessian_top_eigenvalue_mean"
PANELS = (
    (ACCURACY, "meta-test target accuracy"),
    (SUPPORT_LOSS, r"support loss E[L($D_i$; $\tilde\theta_i$)]"),
    (FLATNESS, r"curvature E[$\lambda_{\max}$]"),
)
PANEL_NAMES = {ACCURACY: "accuracy", SUPPORT_LOSS: "support loss", FLATNESS: "curvature"}
OVERTRAINING_VARIANTS = ("long",)
MAX_COLUMNS = 3


def classification_settings(
    dataset: xr.Dataset, variables: Sequence[str], algorithms: Sequence[str]
) -> list[Setting]:
    """Non-sinusoid settings where some of ``algorithms`` has every one of ``variables``."""
    found = settings_with_data(dataset, variables, algorithms=algorithms)
    return [setting for setting in found if setting.dataset != "sinusoid"]


def panel_title(setting: Setting, suffix: str = "", prefix: str = "") -> str:
    """``setting``'s title on two lines (data set, then the rest), with ``prefix``/``suffix``."""
    title = setting.title
    head, _, rest = title.partition("\n") if "\n" in title else title.partition(", ")
    rest = f"{rest}{suffix}" if rest else suffix.removeprefix(", ")
    return f"{prefix}{head}\n{rest}" if rest else f"{prefix}{head}"


def wrapped_axes(figure: Figure, count: int, columns: int) -> list[Axes]:
    """``count`` axes on a grid ``columns`` wide; the unused cells are switched off."""
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    grid = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for axes in grid[count:]:
        axes.set_axis_off()
    return grid[:count]


def bottom_legend(figure: Figure, axes_list: Sequence[Axes]) -> None:
    """One legend under the figure with every distinct label of ``axes_list``."""
    shown: dict[str, object] = {}
    for axes in axes_list:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            shown.setdefault(label, handle)
    if shown:
        figure.legend(
            list(shown.values()),
            list(shown.keys()),
            loc="outside lower center",
            ncols=min(len(shown), 4),
            frameon=False,
        )


def draw_epoch_panels(
    dataset: xr.Dataset, settings: Sequence[Setting], algorithms: Sequence[str], title: str
) -> Figure:
    """Rows: ``settings``; columns: accuracy, support loss and E[λmax] where measured.

    ``title`` is completed by the names of the panels drawn (":" then e.g. "accuracy and support
    loss"), so that it never names a panel the figure lacks.
    """
    columns = [
        (variable, label)
        for variable, label in PANELS
        if variable in dataset.data_vars
        and any(algorithms_with_data(dataset, s, [variable], algorithms) for s in settings)
    ]
    with figure_style():
        figure = new_figure(max(3.6 * len(columns), 6.5), 0.9 + 2.7 * len(settings))
        grid = figure.subplots(len(settings), len(columns), squeeze=False)
        for row, setting in enumerate(settings):
            for column, (variable, label) in enumerate(columns):
                axes = grid[row, column]
                drawn = algorithms_with_data(dataset, setting, [variable], algorithms)
                if not drawn:
                    axes.set_axis_off()
                    continue
                for algorithm in drawn:
                    plot_seed_band(
                        axes,
                        dataset,
                        variable,
                        setting,
                        algorithm,
                        color=algorithm_color(algorithm),
                        label=algorithm_label(algorithm),
                    )
                axes.set_title(panel_title(setting))
                axes.set_ylabel(label)
                axes.set_xlabel(checkpoint_label(dataset))
                checkpoint_axis(axes, dataset)
        names = [PANEL_NAMES[variable] for variable, _ in columns]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        figure.suptitle(f"{title}: {listed}")
        bottom_legend(figure, grid.ravel().tolist())
    return figure


def overtraining_settings(dataset: xr.Dataset) -> list[Setting]:
    """MAML-family settings of an overtraining variant with a measured target accuracy."""
    found = classification_settings(dataset, [ACCURACY], META_LEARNERS)
    return [setting for setting in found if setting.variant in OVERTRAINING_VARIANTS]


def missing_for_fig3(dataset: xr.Dataset) -> str | None:
    """Why Figure 3 cannot be drawn from ``dataset``, or None."""
    if missing_variables(dataset, [ACCURACY]):
        return f"fig3 needs variable {ACCURACY!r}; the aggregate lacks it"
    if not overtraining_settings(dataset):
        variants = sorted(dataset["variant"].values.tolist())
        return (
            f"fig3 needs an overtraining run (variant {' or '.join(OVERTRAINING_VARIANTS)}) of a "
            f"MAML-family method with {ACCURACY!r}; the aggregate has variants {variants}"
        )
    return None


def draw_fig3(dataset: xr.Dataset) -> Figure:
    """Overtraining: accuracy, support loss and E[λmax] vs epoch of the long runs."""
    reason = missing_for_fig3(dataset)
    if reason:
        raise FigureError(reason)
    return draw_epoch_panels(
        dataset,
        overtraining_settings(dataset),
        META_LEARNERS,
        "Overtraining, a long meta-training",
    )


def missing_for_fig4(dataset: xr.Dataset) -> str | None:
    """Why Figure 4 cannot be drawn from ``dataset``, or None."""
    if missing_variables(dataset, [ACCURACY]):
        return f"fig4 needs variable {ACCURACY!r}; the aggregate lacks it"
    if not classification_settings(dataset, [ACCURACY], BASELINES):
        return f"fig4 needs a finetune classification run with {ACCURACY!r}; the aggregate has none"
    return None


def draw_fig4(dataset: xr.Dataset) -> Figure:
    """Finetune baseline: accuracy, support loss and E[λmax] (where measured) vs epoch."""
    reason = missing_for_fig4(dataset)
    if reason:
        raise FigureError(reason)
    return draw_epoch_panels(
        dataset,
        classification_settings(dataset, [ACCURACY], BASELINES),
        BASELINES,
        "Finetune baseline during training",
    )


FIG3 = FigureSpec(
    name="fig3",
    description="overtraining (variant long): accuracy, support loss, E[λmax] vs epoch",
    draw=draw_fig3,
    variables=(ACCURACY,),
    optional_variables=(SUPPORT_LOSS, FLATNESS),
    missing=missing_for_fig3,
    needs=(
        Needs(
            ("accuracy",),
            kind="classification",
            roles=("meta-learner",),
            variants=OVERTRAINING_VARIANTS,
        ),
    ),
    title="Overtraining (fig. 3)",
    caption="""\
**Overtraining** (the paper's figure 3). Runs meta-trained far longer than usual (variant
``long``; First-Order MAML on MiniImagenet 5-way 1-shot in the paper): the meta-test target
accuracy, the support loss E[L(Dᵢ; θ̃ᵢ)] at the adapted parameters, and the curvature E[λmax] of
the support-loss Hessian there, against the epoch (mean ± 95% CI over seeds). In the paper the
accuracy peaks and then falls while the support loss keeps decreasing and the solutions keep
getting flatter: flatness does not track generalization.
""",
)
FIG4 = FigureSpec(
    name="fig4",
    description="finetune baseline: accuracy, support loss, E[λmax] (if measured) vs epoch",
    draw=draw_fig4,
    variables=(ACCURACY,),
    optional_variables=(SUPPORT_LOSS, FLATNESS),
    missing=missing_for_fig4,
    needs=(Needs(("accuracy",), kind="classification", roles=("baseline",)),),
    title="Finetune baseline (fig. 4)",
    caption="""\
**The finetune baseline** (the paper's figure 4). The same panels as figure 3 — meta-test target
accuracy, support loss at the adapted parameters and, where measured, the curvature E[λmax] —
for the baseline that pre-trains on all meta-training classes and finetunes on each task's
support set (mean ± 95% CI over seeds).
""",
)

__all__ = ["FIG3", "FIG4", "draw_fig3", "draw_fig4", "missing_for_fig3", "missing_for_fig4"]
