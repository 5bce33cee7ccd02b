"""Pieces every figure module draws with: grids of panels, curves per algorithm, labelled axes,
and the legend under a figure.

Each drawing module keeps only what makes its figure different; matplotlib is imported only
when a figure is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from metalandscape.aggregate import INNER_STEP_SIZE
from metalandscape.figures import FigureError
from metalandscape.figures.common import (
    META_LEARNERS,
    Setting,
    algorithm_color,
    algorithm_label,
    checkpoint_axis,
    checkpoint_label,
    new_figure,
    plot_seed_band,
    settings_with_data,
)

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure
    from matplotlib.lines import Line2D


def require(dataset: xr.Dataset, missing: Callable[[xr.Dataset], str | None]) -> None:
    """Raise :class:`FigureError` with ``missing``'s reason when ``dataset`` lacks something."""
    reason = missing(dataset)
    if reason:
        raise FigureError(reason)


def classification_settings(
    dataset: xr.Dataset, variables: Sequence[str], algorithms: Sequence[str] = META_LEARNERS
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


def grid_shape(count: int, max_columns: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``count`` panels at most ``max_columns`` wide."""
    columns = max(1, min(count, max_columns))
    return math.ceil(count / columns), columns


def wrapped_axes(figure: Figure | SubFigure, count: int, columns: int) -> list[Axes]:
    """``count`` axes on a grid ``columns`` wide; the unused cells are switched off."""
    rows, columns = grid_shape(count, columns)
    grid = figure.subplots(rows, columns, squeeze=False).ravel().tolist()
    for axes in grid[count:]:
        axes.set_axis_off()
    return grid[:count]


def wrapped_figure(
    count: int,
    max_columns: int,
    panel_size: tuple[float, float],
    *,
    min_width: float = 6.5,
    margin: float = 0.9,
) -> tuple[Figure, list[Axes]]:
    """A figure of ``count`` panels of ``panel_size`` (inches) on a grid ``max_columns`` wide.

    The figure is at least ``min_width`` wide and ``margin`` taller than its panels (titles and
    legend); call it inside :func:`~metalandscape.figures.common.figure_style`.
    """
    rows, columns = grid_shape(count, max_columns)
    width, height = panel_size
    figure = new_figure(max(width * columns, min_width), margin + height * rows)
    return figure, wrapped_axes(figure, count, columns)


def algorithm_curves(
    axes: Axes,
    dataset: xr.Dataset,
    variable: str,
    setting: Setting,
    algorithms: Iterable[str],
    label: Callable[[str], str | None] = algorithm_label,
    **style: object,
) -> None:
    """``variable`` over checkpoints of each of ``algorithms`` in its colour, named ``label``."""
    for algorithm in algorithms:
        plot_seed_band(
            axes,
            dataset,
            variable,
            setting,
            algorithm,
            color=algorithm_color(algorithm),
            label=label(algorithm),
            **style,
        )


def checkpoint_panel(
    axes: Axes, dataset: xr.Dataset, ylabel: str, title: str | None = None, *, xlabel: bool = True
) -> None:
    """Label a panel of curves over checkpoints: title, y label, x label and x ticks."""
    if title is not None:
        axes.set_title(title)
    axes.set_ylabel(ylabel)
    if xlabel:
        axes.set_xlabel(checkpoint_label(dataset))
    checkpoint_axis(axes, dataset)


def curves_panel(
    axes: Axes,
    dataset: xr.Dataset,
    variable: str,
    setting: Setting,
    algorithms: Iterable[str],
    ylabel: str,
    title: str | None = None,
    *,
    xlabel: bool = True,
    **style: object,
) -> None:
    """:func:`algorithm_curves` of ``variable`` on a panel labelled by :func:`checkpoint_panel`."""
    algorithm_curves(axes, dataset, variable, setting, algorithms, **style)
    checkpoint_panel(axes, dataset, ylabel, title, xlabel=xlabel)


def colored_y_axis(axes: Axes, label: str, color: tuple[float, float, float]) -> None:
    """A y axis whose label and ticks take ``color`` (the series drawn against it)."""
    axes.set_ylabel(label, color=color)
    axes.tick_params(axis="y", colors=color)


def distinct_handles(axes_list: Iterable[Axes]) -> dict[str, Artist]:
    """Every distinct legend label of ``axes_list`` with its first handle, in drawing order."""
    shown: dict[str, Artist] = {}
    for axes in axes_list:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            shown.setdefault(label, handle)
    return shown


def figure_legend(figure: Figure, handles: Sequence[Artist], ncols: int, **options: object) -> None:
    """One frameless legend of ``handles`` under ``figure``."""
    figure.legend(
        handles=list(handles),
        loc="outside lower center",
        ncols=ncols,
        frameon=False,
        **options,  # type: ignore[arg-type]
    )


def bottom_legend(figure: Figure, axes_list: Iterable[Axes], max_columns: int | None = 4) -> None:
    """One legend under the figure with every distinct label of ``axes_list``.

    ``max_columns``: how many entries one row holds at the most (None: all in one row).
    """
    shown = distinct_handles(axes_list)
    if shown:
        figure.legend(
            list(shown.values()),
            list(shown.keys()),
            loc="outside lower center",
            ncols=min(len(shown), max_columns or len(shown)),
            frameon=False,
        )


def legend_line(label: str, color: object = "0.3", **style: object) -> Line2D:
    """A legend entry that stands for a drawn line or marker (drawn nowhere itself)."""
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, label=label, **style)  # type: ignore[arg-type]


def algorithm_handles(algorithms: Iterable[str], **style: object) -> list[Line2D]:
    """One legend entry per algorithm of ``algorithms``, in its colour and with its name."""
    return [legend_line(algorithm_label(a), algorithm_color(a), **style) for a in algorithms]


#: Legend entry of the 2/α line of the curvature panels.
STABILITY_LABEL = r"$2/\alpha$: steps of $\alpha$ cannot settle above it"


def stability_lines(
    axes: Axes, dataset: xr.Dataset, setting: Setting, algorithms: list[str]
) -> None:
    """Each distinct 2/α of the setting's runs of ``algorithms`` as a dotted line, labelled."""
    if INNER_STEP_SIZE not in dataset.data_vars:
        return
    alphas: set[float] = set()
    for algorithm in algorithms:
        values = dataset[INNER_STEP_SIZE].sel({**setting.select(), "algorithm": algorithm}).values
        alphas |= {round(float(a), 12) for a in values[np.isfinite(values)] if a > 0}
    for alpha in sorted(alphas):
        axes.axhline(2 / alpha, color="0.35", linestyle=":", linewidth=1.3, label=STABILITY_LABEL)
        axes.annotate(
            f"2/α = {2 / alpha:g}",
            xy=(1, 2 / alpha),
            xycoords=("axes fraction", "data"),
            xytext=(-3, 3),
            textcoords="offset points",
            ha="right",
            va="bottom",
            fontsize="x-small",
            color="0.25",
        )
