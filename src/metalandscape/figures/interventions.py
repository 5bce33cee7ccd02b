"""The interventions figure: each intervention's paired change against its reference, per quantity.

Not a figure of the registry (no ``SPECS``): it draws :func:`metalandscape.interventions.
intervention_table`, and ``metalandscape claims`` writes it beside that table.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pandas as pd

from metalandscape.figures import panels
from metalandscape.figures.common import figure_style, mpl, new_figure, save_figure
from metalandscape.statistics import INTERVAL_DESCRIPTION


def draw_interventions(table: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """One panel per quantity: each intervention's mean paired change (dot) and its 95%
    interval over seeds (bar) against zero (no change), filled where the quantity moved."""
    quantities = list(dict.fromkeys(table["quantity"]))
    labels = list(
        dict.fromkeys(
            f"{row.intervention}\n{row.dataset} {row.way}-way {row.shot}-shot"
            for row in table.itertuples()
        )
    )
    with figure_style():
        columns = min(3, len(quantities))
        rows = math.ceil(len(quantities) / columns)
        figure = new_figure(4.4 * columns, 0.9 + rows * (0.9 + 0.45 * len(labels)))
        for axes, quantity in zip(
            panels.wrapped_axes(figure, len(quantities), columns), quantities, strict=True
        ):
            for row in table[table["quantity"] == quantity].itertuples():
                y = labels.index(f"{row.intervention}\n{row.dataset} {row.way}-way {row.shot}-shot")
                color = "tab:red" if row.moved else "0.35"
                if math.isfinite(row.ci_low) and math.isfinite(row.ci_high):
                    axes.plot([row.ci_low, row.ci_high], [y, y], color=color, linewidth=2)
                axes.plot(
                    [row.change],
                    [y],
                    "o",
                    color=color,
                    markerfacecolor=color if row.moved else "white",
                    markersize=6,
                )
            axes.axvline(0, color="0.5", linestyle="--", linewidth=0.9)
            axes.xaxis.set_major_locator(mpl.ticker.MaxNLocator(nbins=4))
            axes.set_yticks(range(len(labels)), labels, fontsize="x-small")
            axes.set_ylim(len(labels) - 0.5, -0.5)
            axes.set_title(textwrap.fill(quantity, 40), fontsize="small")
            axes.set_xlabel("change vs reference (paired by seed)", fontsize="small")
        reference = ", ".join(dict.fromkeys(table["reference"]))
        figure.suptitle(
            f"Interventions against {reference}: filled red = moved (interval excludes 0 and "
            f"the change passes the config's minimum)\n{INTERVAL_DESCRIPTION}",
            fontsize="small",
        )
        return save_figure(figure, out)
