"""Figures 3 and 4: target accuracy, support loss and curvature over epochs.

Figure 3 shows the overtraining runs (variant ``long``), Figure 4 the finetune baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    BASELINES,
    FLATNESS,
    META_LEARNERS,
    TEST_ACCURACY,
    TEST_ACCURACY_LABEL,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

SUPPORT_LOSS = "support_loss_mean"
PANELS = (
    (TEST_ACCURACY, TEST_ACCURACY_LABEL),
    (SUPPORT_LOSS, r"support loss E[L($D_i$; $\tilde\theta_i$)]"),
    (FLATNESS, r"curvature E[$\lambda_{\max}$]"),
)
PANEL_NAMES = {TEST_ACCURACY: "accuracy", SUPPORT_LOSS: "support loss", FLATNESS: "curvature"}
OVERTRAINING_VARIANTS = ("long",)


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
        and any(common.algorithms_with_data(dataset, s, [variable], algorithms) for s in settings)
    ]
    with common.figure_style():
        figure = common.new_figure(max(3.6 * len(columns), 6.5), 0.9 + 2.7 * len(settings))
        grid = figure.subplots(len(settings), len(columns), squeeze=False)
        for row, setting in enumerate(settings):
            for column, (variable, label) in enumerate(columns):
                axes = grid[row, column]
                drawn = common.algorithms_with_data(dataset, setting, [variable], algorithms)
                if not drawn:
                    axes.set_axis_off()
                    continue
                heading = panels.panel_title(setting)
                panels.curves_panel(axes, dataset, variable, setting, drawn, label, heading)
                if variable == FLATNESS:
                    panels.stability_lines(axes, dataset, setting, drawn)
        names = [PANEL_NAMES[variable] for variable, _ in columns]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        figure.suptitle(f"{title}: {listed}")
        panels.bottom_legend(figure, grid.ravel().tolist())
    return figure


def overtraining_settings(dataset: xr.Dataset) -> list[Setting]:
    """MAML-family settings of an overtraining variant with a measured target accuracy."""
    found = panels.classification_settings(dataset, [TEST_ACCURACY], META_LEARNERS)
    return [setting for setting in found if setting.variant in OVERTRAINING_VARIANTS]


def _lacks_accuracy(name: str, dataset: xr.Dataset) -> str | None:
    """Why figure ``name`` cannot be drawn without a target accuracy, or None when it has one."""
    if common.missing_variables(dataset, [TEST_ACCURACY]):
        return f"{name} needs variable {TEST_ACCURACY!r}; the aggregate lacks it"
    return None


def missing_for_fig3(dataset: xr.Dataset) -> str | None:
    """Why Figure 3 cannot be drawn from ``dataset``, or None."""
    lacking = _lacks_accuracy("fig3", dataset)
    if lacking or overtraining_settings(dataset):
        return lacking
    variants = sorted(dataset["variant"].values.tolist())
    return (
        f"fig3 needs an overtraining run (variant {' or '.join(OVERTRAINING_VARIANTS)}) of a "
        f"MAML-family method with {TEST_ACCURACY!r}; the aggregate has variants {variants}"
    )


def draw_fig3(dataset: xr.Dataset) -> Figure:
    """Overtraining: accuracy, support loss and E[λmax] vs epoch of the long runs."""
    panels.require(dataset, missing_for_fig3)
    settings = overtraining_settings(dataset)
    return draw_epoch_panels(dataset, settings, META_LEARNERS, "Overtraining, a long meta-training")


def missing_for_fig4(dataset: xr.Dataset) -> str | None:
    """Why Figure 4 cannot be drawn from ``dataset``, or None."""
    lacking = _lacks_accuracy("fig4", dataset)
    if lacking or panels.classification_settings(dataset, [TEST_ACCURACY], BASELINES):
        return lacking
    return (
        f"fig4 needs a finetune classification run with {TEST_ACCURACY!r}; the aggregate has none"
    )


def draw_fig4(dataset: xr.Dataset) -> Figure:
    """Finetune baseline: accuracy, support loss and E[λmax] (where measured) vs epoch."""
    panels.require(dataset, missing_for_fig4)
    settings = panels.classification_settings(dataset, [TEST_ACCURACY], BASELINES)
    return draw_epoch_panels(dataset, settings, BASELINES, "Finetune baseline during training")


FIG3 = FigureSpec(
    name="fig3",
    description="overtraining (variant long): accuracy, support loss, E[λmax] vs epoch",
    draw=draw_fig3,
    variables=(TEST_ACCURACY,),
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
    variables=(TEST_ACCURACY,),
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

SPECS = (FIG3, FIG4)

__all__ = ["FIG3", "FIG4", "draw_fig3", "draw_fig4", "missing_for_fig3", "missing_for_fig4"]
