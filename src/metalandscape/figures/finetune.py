"""Figure 6: coherence of the finetune baseline, and trajectory L2 norms of every algorithm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalandscape.figures import FigureError
from metalandscape.figures.common import (
    ALGORITHM_ORDER,
    BASELINES,
    Setting,
    algorithm_color,
    algorithm_label,
    algorithms_with_data,
    checkpoint_axis,
    checkpoint_label,
    figure_style,
    new_figure,
    plot_seed_band,
)
from metalandscape.figures.overtraining import (
    bottom_legend,
    classification_settings,
    panel_title,
    wrapped_axes,
)
from metalandscape.figures.spec import FigureSpec, Needs, lazy_import

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

sns = lazy_import("seaborn")

TRAJECTORY_COHERENCE = "trajectory_coherence"
GRADIENT_COHERENCE = "gradient_coherence"
TRAJECTORY_NORM = "trajectory_norm_mean"
COHERENCES = (
    ("a", TRAJECTORY_COHERENCE, r"trajectory coherence E[$\hat\theta_i^\top\hat\theta_j$]"),
    ("b", GRADIENT_COHERENCE, r"gradient coherence E[$g_i^\top g_j$]"),
)
MAX_COLUMNS = 3


def _finetune_settings(dataset: xr.Dataset, variable: str) -> list[Setting]:
    if variable not in dataset.data_vars:
        return []
    return classification_settings(dataset, [variable], BASELINES)


def _norm_settings(dataset: xr.Dataset) -> list[Setting]:
    if TRAJECTORY_NORM not in dataset.data_vars:
        return []
    found = classification_settings(dataset, [TRAJECTORY_NORM], ALGORITHM_ORDER)
    return sorted(found, key=lambda s: (s.shot, s))


def missing_for_fig6(dataset: xr.Dataset) -> str | None:
    """Why Figure 6 cannot be drawn from ``dataset``, or None."""
    if any(_finetune_settings(dataset, variable) for _, variable, _ in COHERENCES):
        return None
    if _norm_settings(dataset):
        return None
    return (
        f"fig6 needs finetune {TRAJECTORY_COHERENCE!r} or {GRADIENT_COHERENCE!r}, or "
        f"{TRAJECTORY_NORM!r} of any classification run; the aggregate has none of them"
    )


def _coherence_panel(
    axes: Axes, dataset: xr.Dataset, variable: str, settings: list[Setting]
) -> None:
    """The baseline's ``variable`` per setting: its own colour, one line style per setting.

    The legend sits below the axes so that it never covers a line.
    """
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for index, setting in enumerate(settings):
        linestyle, marker = styles[index % len(styles)]
        short = setting.title.split("\n")[-1]
        for algorithm in algorithms_with_data(dataset, setting, [variable], BASELINES):
            label = short if len(BASELINES) == 1 else f"{short}, {algorithm_label(algorithm)}"
            plot_seed_band(
                axes,
                dataset,
                variable,
                setting,
                algorithm,
                color=algorithm_color(algorithm),
                label=label,
                linestyle=linestyle,
                marker=marker,
            )
    axes.legend(
        fontsize="x-small",
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncols=min(len(settings), 2),
    )


def draw_fig6(dataset: xr.Dataset) -> Figure:
    """(a, b) finetune trajectory and gradient coherence; (c, d, ...) trajectory norms per shot."""
    reason = missing_for_fig6(dataset)
    if reason:
        raise FigureError(reason)
    coherences = [
        (letter, variable, label, _finetune_settings(dataset, variable))
        for letter, variable, label in COHERENCES
    ]
    coherences = [entry for entry in coherences if entry[3]]
    norms = _norm_settings(dataset)
    shots = sorted({s.shot for s in norms})
    letters = {shot: chr(ord("c") + index) for index, shot in enumerate(shots)}
    count = len(coherences) + len(norms)
    columns = min(count, MAX_COLUMNS)
    with figure_style():
        rows = -(-count // columns)
        figure = new_figure(max(3.9 * columns, 6.5), 0.9 + 2.9 * rows)
        panels = wrapped_axes(figure, count, columns)
        for axes, (letter, variable, label, settings) in zip(panels, coherences):
            _coherence_panel(axes, dataset, variable, settings)
            axes.set_title(f"({letter}) finetune baseline")
            axes.set_ylabel(label)
            axes.set_xlabel(checkpoint_label(dataset))
            checkpoint_axis(axes, dataset)
        norm_axes = panels[len(coherences) :]
        for axes, setting in zip(norm_axes, norms):
            for algorithm in algorithms_with_data(
                dataset, setting, [TRAJECTORY_NORM], ALGORITHM_ORDER
            ):
                plot_seed_band(
                    axes,
                    dataset,
                    TRAJECTORY_NORM,
                    setting,
                    algorithm,
                    color=algorithm_color(algorithm),
                    label=algorithm_label(algorithm),
                )
            axes.set_title(panel_title(setting, prefix=f"({letters[setting.shot]}) "))
            axes.set_ylabel(r"trajectory norm E‖$\tilde\theta_i - \theta_s$‖")
            axes.set_xlabel(checkpoint_label(dataset))
            checkpoint_axis(axes, dataset)
        figure.suptitle("Finetune coherence and adaptation-trajectory length")
        bottom_legend(figure, norm_axes)
    return figure


FIG6 = FigureSpec(
    name="fig6",
    description="finetune trajectory/gradient coherence, trajectory L2 norms (any of them)",
    draw=draw_fig6,
    variables=(TRAJECTORY_COHERENCE, GRADIENT_COHERENCE, TRAJECTORY_NORM),
    missing=missing_for_fig6,
    needs=(
        Needs(("trajectory_coherence",), kind="classification"),
        Needs(("gradient_coherence",), kind="classification", roles=("baseline",)),
    ),
    title="Finetune coherence and trajectory norms (fig. 6)",
    caption="""\
**Coherence of the finetune baseline and trajectory lengths** (the paper's figure 6). (a) The
trajectory coherence E[θ̂ᵢᵀθ̂ⱼ] and (b) the gradient coherence E[gᵢᵀgⱼ] of the finetune baseline
over training, one line per setting; (c, d) the mean L2 norm E‖θ̃ᵢ − θs‖ of the adaptation
trajectories of every algorithm, 1-shot and 5-shot settings. Only panels whose data were
measured are drawn. In the paper the baseline's coherences stay low while MAML's rise.
""",
)

__all__ = ["FIG6", "draw_fig6", "missing_for_fig6"]
