"""metalandscape: the loss landscape of gradient-based meta-learning, measured and drawn.

From a notebook, after the workflow ran::

    import metalandscape

    dataset = metalandscape.load("sinusoid")  # results/aggregate/sinusoid.nc
    figure = metalandscape.draw("fig2", dataset)  # a matplotlib Figure

Importing the package is cheap: :func:`load` and :func:`draw` import xarray and matplotlib on
their first call.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xarray as xr
    from matplotlib.figure import Figure

__version__ = "0.1.0"

__all__ = ["__version__", "draw", "figure_names", "load"]


def load(family: str, results: str | Path = "results") -> xr.Dataset:
    """The aggregate Dataset of experiment ``family`` (``<results>/aggregate/<family>.nc``)."""
    from metalandscape.aggregate import load_aggregate

    return load_aggregate(Path(results) / "aggregate" / f"{family}.nc")


def draw(figure: str, dataset: xr.Dataset) -> Figure:
    """Figure ``figure`` (e.g. ``"fig2"``, see :func:`figure_names`) drawn from ``dataset``.

    Raises :class:`~metalandscape.figures.FigureError` naming what ``dataset`` lacks.
    """
    from metalandscape.figures import FigureError, figure_spec

    spec = figure_spec(figure)
    reason = spec.missing(dataset)
    if reason:
        raise FigureError(reason)
    return spec.draw(dataset)


def figure_names() -> tuple[str, ...]:
    """Every registered figure name, in the paper's order."""
    from metalandscape.figures import FIGURE_NAMES

    return FIGURE_NAMES
