"""Interventions: does changing flatness or coherence change generalization?

An intervention is an algorithm whose registry line names the algorithm it modifies
(``intervention_on``: regularized MAML and Sharp-MAML modify MAML). Each intervention run is
paired with the reference run of the same dataset, way, shot and seed in the same aggregate (the
reference's variant if it has one there, else its only variant), and every quantity of
:data:`QUANTITIES` is compared seed by seed: the difference intervention − reference, its mean
over seeds with a Student-t 95% interval (:mod:`metalandscape.statistics`), and the relative
change against the reference's mean. A quantity has *moved* when the interval excludes 0 and
the relative change is at least the config's ``claims.intervention_min_relative_change`` — both
fixed before a study runs.

Window quantities are taken over the claims window (:class:`metalandscape.claims.Window`):
their mean over the checkpoints in it; the accuracy's area under the curve is the trapezoid
over meta-iterations in the window divided by its length (a mean accuracy over iterations).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from metalandscape.aggregate import ITERATION
from metalandscape.algorithms import ALGORITHMS
from metalandscape.claims import SETTING_DIMS, Thresholds, Window
from metalandscape.statistics import INTERVAL_DESCRIPTION, scalar_interval


def _window_mean(iterations: np.ndarray, values: np.ndarray, window: Window) -> float:
    inside = window.contains(iterations) & np.isfinite(values)
    return float(values[inside].mean()) if inside.any() else math.nan


def _final(iterations: np.ndarray, values: np.ndarray, window: Window) -> float:
    inside = window.contains(iterations) & np.isfinite(values)
    return float(values[inside][np.argmax(iterations[inside])]) if inside.any() else math.nan


def _area(iterations: np.ndarray, values: np.ndarray, window: Window) -> float:
    inside = window.contains(iterations) & np.isfinite(values)
    if inside.sum() < 2:
        return math.nan
    x, y = iterations[inside], values[inside]
    order = np.argsort(x)
    x, y = x[order], y[order]
    return float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)) / (x[-1] - x[0]))


@dataclass(frozen=True)
class Quantity:
    """One compared quantity: its label, the aggregate variable, and how a run's series
    (iterations, values) becomes one number."""

    label: str
    variable: str
    summary: Callable[[np.ndarray, np.ndarray, Window], float]


#: What every intervention is compared on.
QUANTITIES: tuple[Quantity, ...] = (
    Quantity("E[λmax] at θ̃ (window mean)", "hessian_top_eigenvalue_mean", _window_mean),
    Quantity("E[λmax] at θs (window mean)", "hessian_start_top_eigenvalue_mean", _window_mean),
    Quantity("trajectory coherence (window mean)", "trajectory_coherence", _window_mean),
    Quantity("gradient coherence (window mean)", "gradient_coherence", _window_mean),
    Quantity("final meta-test accuracy", "test_target_accuracy_mean", _final),
    Quantity(
        "meta-test accuracy, area under the curve in the window", "test_target_accuracy_mean", _area
    ),
)


def _series(
    dataset: xr.Dataset, variable: str, run: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of one run's checkpoints."""
    values = dataset[variable].sel(run).values.astype(np.float64)
    iterations = dataset[ITERATION].sel(run).values.astype(np.float64)
    return iterations, values


def _has_values(dataset: xr.Dataset, variable: str, selection: dict[str, Any]) -> bool:
    return variable in dataset and bool(np.isfinite(dataset[variable].sel(selection).values).any())


def _pairs(dataset: xr.Dataset) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(intervention setting, its algorithm, the reference's variant) of every intervention
    with a reference in ``dataset``."""
    anchor = next((q.variable for q in QUANTITIES if q.variable in dataset), None)
    if anchor is None:
        return
    for algorithm in dataset["algorithm"].values:
        reference = ALGORITHMS.get(str(algorithm))
        if reference is None or reference.intervention_on is None:
            continue
        if reference.intervention_on not in dataset["algorithm"].values:
            continue
        for dataset_name in dataset["dataset"].values:
            for way in dataset["way"].values:
                for shot in dataset["shot"].values:
                    base = {"dataset": dataset_name, "way": way, "shot": shot}
                    reference_variants = [
                        v
                        for v in dataset["variant"].values
                        if _has_values(
                            dataset,
                            anchor,
                            {**base, "variant": v, "algorithm": reference.intervention_on},
                        )
                    ]
                    for variant in dataset["variant"].values:
                        key = {**base, "variant": variant, "algorithm": algorithm}
                        if not _has_values(dataset, anchor, key):
                            continue
                        if variant in reference_variants:
                            yield key, reference.intervention_on, str(variant)
                        elif len(reference_variants) == 1:
                            yield key, reference.intervention_on, str(reference_variants[0])


def intervention_table(datasets: Sequence[xr.Dataset], thresholds: Thresholds) -> pd.DataFrame:
    """One row per intervention setting and quantity: paired differences over seeds."""
    rows = []
    window = thresholds.window
    for dataset in datasets:
        if ITERATION not in dataset.coords:
            continue
        for key, reference, reference_variant in _pairs(dataset):
            reference_key = {**key, "algorithm": reference, "variant": reference_variant}
            for quantity in QUANTITIES:
                if quantity.variable not in dataset:
                    continue
                differences, references, seeds = [], [], []
                for seed in dataset["seed"].values:
                    mine = quantity.summary(
                        *_series(dataset, quantity.variable, {**key, "seed": seed}), window
                    )
                    theirs = quantity.summary(
                        *_series(dataset, quantity.variable, {**reference_key, "seed": seed}),
                        window,
                    )
                    if math.isfinite(mine) and math.isfinite(theirs):
                        differences.append(mine - theirs)
                        references.append(theirs)
                        seeds.append(int(seed))
                if not differences:
                    continue
                mean, low, high, count = scalar_interval(np.asarray(differences))
                base = float(np.mean(references))
                relative = mean / abs(base) if base else math.nan
                banded = math.isfinite(low) and math.isfinite(high)
                moved = (
                    banded
                    and (low > 0 or high < 0)
                    and abs(relative) >= thresholds.intervention_min_relative_change
                )
                rows.append(
                    {
                        **{dim: _plain(key[dim]) for dim in SETTING_DIMS},
                        "intervention": f"{ALGORITHMS[str(key['algorithm'])].title} "
                        f"[{_plain(key['variant'])}]",
                        "reference": f"{ALGORITHMS[reference].title} [{reference_variant}]",
                        "quantity": quantity.label,
                        "reference_mean": base,
                        "change": mean,
                        "ci_low": low,
                        "ci_high": high,
                        "relative_change": relative,
                        "seeds": count,
                        "paired_seeds": " ".join(map(str, seeds)),
                        "window": window.describe(),
                        "moved": bool(moved),
                    }
                )
    return pd.DataFrame(rows)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def interventions_markdown(table: pd.DataFrame, thresholds: Thresholds) -> str:
    """The intervention table as Markdown: one section per intervention setting."""
    lines = [
        "# Interventions against MAML, paired by seed",
        "",
        f"Each row: the intervention's value minus its reference's, seed by seed; {INTERVAL_DESCRIPTION}. "
        f"Window quantities over {thresholds.window.describe()}. *moved*: the interval excludes 0 "
        f"and the change is at least {thresholds.intervention_min_relative_change:g} of the "
        "reference's mean (claims.intervention_min_relative_change, fixed before the run).",
        "",
    ]
    if table.empty:
        return "\n".join([*lines, "No intervention run has a reference run to pair with.", ""])
    for (intervention, dataset, way, shot), rows in table.groupby(
        ["intervention", "dataset", "way", "shot"], sort=False
    ):
        reference = rows["reference"].iloc[0]
        lines += [
            f"## {intervention} vs {reference}: {dataset} {way}-way {shot}-shot",
            "",
            "| quantity | reference mean | change [95% CI] | relative | seeds | moved |",
            "|---|---|---|---|---|---|",
        ]
        for row in rows.itertuples():
            interval = (
                f" [{row.ci_low:.3g}, {row.ci_high:.3g}]"
                if math.isfinite(row.ci_low) and math.isfinite(row.ci_high)
                else ""
            )
            lines.append(
                f"| {row.quantity} | {row.reference_mean:.3g} | {row.change:+.3g}{interval} "
                f"| {row.relative_change:+.1%} | {row.seeds} | {'yes' if row.moved else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)
