"""The window-sensitivity figure: each claim's primary statistic against where its window starts.

Not a figure of the registry (no ``SPECS``): it draws the claims engine's window table
(:func:`metalandscape.claims.window_sensitivity`), not an aggregate, and ``metalandscape claims``
writes it beside the claims table.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from metalandscape.figures import panels
from metalandscape.figures.common import (
    algorithm_color,
    algorithm_label,
    figure_style,
    new_figure,
    save_figure,
)
from metalandscape.statistics import INTERVAL_DESCRIPTION

#: Line styles telling settings of one algorithm apart within a panel.
_STYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _setting_label(row: pd.Series | dict) -> str:
    if row["dataset"] == "sinusoid":
        shot = "all k" if row["shot"] == -1 else f"k={row['shot']}"
        return f"sinusoid {shot}"
    return f"{row['dataset']} {row['variant']} {row['way']}-way {row['shot']}-shot"


def draw_windows(table: pd.DataFrame, paper_start: int, out: str | Path) -> tuple[Path, Path]:
    """One panel per claim statistic (primary ones, over epochs): the mean over seeds and its
    interval against the window's first meta-iteration, one line per setting and algorithm,
    the threshold dashed and the configured window start (``paper_start``) dotted."""
    primary = table[table["primary"].astype(bool)] if not table.empty else table
    statistics = list(dict.fromkeys(zip(primary["claim"], primary["statistic"], strict=True)))
    with figure_style():
        if not statistics:
            figure = new_figure(6.0, 2.0)
            axes = figure.add_subplot()
            axes.axis("off")
            axes.text(0.5, 0.5, "no window left enough checkpoints", ha="center", va="center")
            return save_figure(figure, out)
        columns = min(3, len(statistics))
        rows = -(-len(statistics) // columns)
        figure = new_figure(4.3 * columns, 3.1 * rows + 1.2)
        all_axes = panels.wrapped_axes(figure, len(statistics), columns)
        handles: dict[str, object] = {}
        # One line style and marker per setting and algorithm, the same in every panel.
        names = list(
            dict.fromkeys(
                f"{algorithm_label(row.algorithm)}, {_setting_label(row._asdict())}"
                for row in primary.itertuples()
            )
        )
        for axes, (claim, statistic) in zip(all_axes, statistics, strict=True):
            rows_of = primary[(primary["claim"] == claim) & (primary["statistic"] == statistic)]
            groups = rows_of.groupby(
                [rows_of.apply(_setting_label, axis=1), "algorithm"], sort=False
            )
            for (label, algorithm), group in groups:
                group = group.sort_values("start")
                x = group["start"].to_numpy(dtype=float)
                y = group["value"].to_numpy(dtype=float)
                low = group["ci_low"].to_numpy(dtype=float)
                high = group["ci_high"].to_numpy(dtype=float)
                color = algorithm_color(algorithm)
                name = f"{algorithm_label(algorithm)}, {label}"
                line = names.index(name)
                (drawn,) = axes.plot(
                    x,
                    y,
                    _STYLES[line % len(_STYLES)],
                    marker=_MARKERS[line % len(_MARKERS)],
                    color=color,
                    markersize=4,
                    label=name,
                )
                banded = np.isfinite(low) & np.isfinite(high)
                if banded.any():
                    axes.errorbar(
                        x[banded],
                        y[banded],
                        yerr=[y[banded] - low[banded], high[banded] - y[banded]],
                        fmt="none",
                        ecolor=color,
                        elinewidth=0.8,
                        capsize=2,
                    )
                handles.setdefault(name, drawn)
            first = rows_of.iloc[0]
            axes.axhline(first["threshold"], color="0.3", linestyle="--", linewidth=0.9)
            axes.axvline(paper_start, color="0.5", linestyle=":", linewidth=0.9)
            axes.set_xscale("symlog", linthresh=100)
            axes.set_xlim(-10, max(float(primary["start"].max()), 100.0) * 1.5)
            axes.set_xlabel("window starts at meta-iteration")
            title = f"claim {claim}: {statistic} ({first['direction']} {first['threshold']:g})"
            axes.set_title(textwrap.fill(title, 46), fontsize="small")
        figure.suptitle(
            "Claim statistics by window start (dashed: threshold; dotted: the paper's first "
            f"plotted point)\n{INTERVAL_DESCRIPTION}",
            fontsize="small",
        )
        figure.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            ncols=min(3, len(handles)),
            fontsize="small",
            frameon=False,
        )
        return save_figure(figure, out)
