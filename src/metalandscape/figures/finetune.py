"""Figure 6: coherence of the finetune baseline, and trajectory L2 norms of every algorithm."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metalandscape.figures import common, panels
from metalandscape.figures.common import (
    ALGORITHM_ORDER,
    BASELINES,
    GRADIENT_COHERENCE,
    GRADIENT_COHERENCE_LABEL,
    TRAJECTORY_COHERENCE,
    TRAJECTORY_COHERENCE_LABEL,
    Setting,
)
from metalandscape.figures.spec import FigureSpec, Needs

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

TRAJECTORY_NORM = "trajectory_norm_mean"
COHERENCES = (
    ("a", TRAJECTORY_COHERENCE, TRAJECTORY_COHERENCE_LABEL),
    ("b", GRADIENT_COHERENCE, GRADIENT_COHERENCE_LABEL),
)
NORM_LABEL = r"trajectory norm E‖$\tilde\theta_i - \theta_s$‖"
#: The letter of the first trajectory-norm panel; the next ones take the letters after it.
FIRST_NORM_LETTER = "c"
MAX_COLUMNS = 3


def _finetune_settings(dataset: xr.Dataset, variable: str) -> list[Setting]:
    if variable not in dataset.data_vars:
        return []
    return panels.classification_settings(dataset, [variable], BASELINES)


def _norm_settings(dataset: xr.Dataset) -> list[Setting]:
    if TRAJECTORY_NORM not in dataset.data_vars:
        return []
    found = panels.classification_settings(dataset, [TRAJECTORY_NORM], ALGORITHM_ORDER)
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

        def label(algorithm: str, short: str = short) -> str:
            return short if len(BASELINES) == 1 else f"{short}, {common.algorithm_label(algorithm)}"

        drawn = common.algorithms_with_data(dataset, setting, [variable], BASELINES)
        style = {"linestyle": linestyle, "marker": marker}
        panels.algorithm_curves(axes, dataset, variable, setting, drawn, label, **style)
    axes.legend(
        fontsize="x-small",
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.3),
        ncols=min(len(settings), 2),
    )


def draw_fig6(dataset: xr.Dataset) -> Figure:
    """(a, b) finetune trajectory and gradient coherence; (c, d, ...) trajectory norms by shot."""
    panels.require(dataset, missing_for_fig6)
    coherences = [
        (letter, variable, label, _finetune_settings(dataset, variable))
        for letter, variable, label in COHERENCES
    ]
    coherences = [entry for entry in coherences if entry[3]]
    norms = _norm_settings(dataset)
    count = len(coherences) + len(norms)
    with common.figure_style():
        figure, cells = panels.wrapped_figure(count, MAX_COLUMNS, (3.9, 2.9))
        for axes, (letter, variable, label, settings) in zip(cells, coherences):
            _coherence_panel(axes, dataset, variable, settings)
            panels.checkpoint_panel(axes, dataset, label, f"({letter}) finetune baseline")
        norm_axes = cells[len(coherences) :]
        for index, (axes, setting) in enumerate(zip(norm_axes, norms)):
            drawn = common.algorithms_with_data(
                dataset, setting, [TRAJECTORY_NORM], ALGORITHM_ORDER
            )
            letter = chr(ord(FIRST_NORM_LETTER) + index)
            title = panels.panel_title(setting, prefix=f"({letter}) ")
            panels.curves_panel(axes, dataset, TRAJECTORY_NORM, setting, drawn, NORM_LABEL, title)
        figure.suptitle("Finetune coherence and adaptation-trajectory length")
        panels.bottom_legend(figure, norm_axes)
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
over training, one line per setting; (c, d, …) the mean L2 norm E‖θ̃ᵢ − θs‖ of the adaptation
trajectories of every algorithm, one panel per setting, 1-shot settings first. Only panels
whose data were measured are drawn. In the paper the baseline's coherences stay low while MAML's rise.
""",
)

__all__ = ["FIG6", "draw_fig6", "missing_for_fig6"]

SPECS = (FIG6,)
