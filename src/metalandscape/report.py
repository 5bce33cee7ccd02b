"""What Snakemake's report shows next to each figure: its category and its caption.

The category puts figures in the paper's order (``Fig. 02 Flatness``); the caption is the
figure's declared caption, then the runs that drew it (from the experiment grid: data set,
ways, shots, algorithms, variants, seed count, training length, overrides, metric settings) and
what the bands mean (:data:`metalandscape.statistics.INTERVAL_DESCRIPTION`). Importing this is
cheap (no torch): the workflow calls it when it plans.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from metalandscape.figures.spec import FigureSpec
from metalandscape.grid import Grid, yaml_scalar
from metalandscape.statistics import INTERVAL_DESCRIPTION, MIN_SEEDS_FOR_INTERVAL

_FIGURE_NUMBER = re.compile(r"fig(\d+)")
_TITLE_NUMBER = re.compile(r"\s*\(fig\.\s*\d+\)\s*$")


def figure_category(spec: FigureSpec) -> str:
    """``Fig. 02 Flatness``: sorts in the paper's order, ``fig10`` after ``fig2``, and the
    figures beyond the paper (``Fig. ext …``) after them."""
    match = _FIGURE_NUMBER.fullmatch(spec.name)
    number = f"{int(match[1]):02d}" if match else "ext"
    return f"Fig. {number} {_TITLE_NUMBER.sub('', spec.title)}"


def _values(runs: list[Any], key: str) -> str:
    found = sorted({str(run.settings.get(key)) for run in runs if key in run.settings})
    return ", ".join(found) if found else "-"


def runs_description(grid: Grid, family: str, config: Mapping[str, Any]) -> str:
    """One paragraph (reStructuredText) on the runs of ``family`` and how they were measured."""
    runs = [grid.runs[run_id] for run_id in grid.families[family]]
    seeds_per_setting: dict[tuple[Any, ...], set[Any]] = {}
    for run in runs:
        setting = (run.key.variant, run.key.way, run.key.shot, run.key.algorithm)
        seeds_per_setting.setdefault(setting, set()).add(run.key.seed)
    seed_counts = sorted({len(seeds) for seeds in seeds_per_setting.values()})
    lengths = sorted(
        {(run.epochs, int(run.settings.get("iterations_per_epoch", 500))) for run in runs}
    )
    fixed = {"dataset", "algorithm", "seed", "variant", "n_way", "k_shot", "data_path"}
    overrides = sorted(
        {
            f"{key}={yaml_scalar(value)}"
            for run in runs
            for key, value in run.settings.items()
            if key not in fixed and key not in ("epochs", "iterations_per_epoch")
        }
    )
    metrics = sorted({name for run in runs for name in run.metrics})
    measured = sorted({len(run.measured_epochs) for run in runs})
    settings = config.get("metrics") or {}
    metric_text = "; ".join(
        f"{name} ({', '.join(f'{k}={yaml_scalar(v)}' for k, v in sorted(settings[name].items()))})"
        if settings.get(name)
        else name
        for name in metrics
    )
    parts = [
        f"**Runs:** family *{family}*: {len(runs)} run{'s' if len(runs) != 1 else ''} of data set {_values(runs, 'dataset')}, "
        f"ways {_values(runs, 'n_way')}, shots {_values(runs, 'k_shot')}, "
        f"algorithms {_values(runs, 'algorithm')}, variants {_values(runs, 'variant')}; "
        f"{'/'.join(map(str, seed_counts))} seed(s) per setting; "
        + ", ".join(f"{epochs} epochs × {iterations} iterations" for epochs, iterations in lengths)
        + (f"; overrides {', '.join(overrides)}" if overrides else "")
        + ".",
        f"**Measured:** {metric_text}, at {'/'.join(map(str, measured))} epoch(s) per run, "
        f"evaluation seed {config.get('evaluation_seed', 0)}.",
        f"**Bands:** {INTERVAL_DESCRIPTION}"
        + (
            f"; none here, with fewer than {MIN_SEEDS_FOR_INTERVAL} seeds per setting."
            if max(seed_counts) < MIN_SEEDS_FOR_INTERVAL
            else "."
        ),
    ]
    return "\n\n".join(parts)


def figure_caption(spec: FigureSpec, grid: Grid, name: str, config: Mapping[str, Any]) -> str:
    """The report caption of scheduled figure ``name``: the spec's caption and its runs."""
    scheduled = grid.figures.get(name)
    if scheduled is None:
        return spec.caption
    return f"{spec.caption.strip()}\n\n{runs_description(grid, scheduled.family, config)}"
