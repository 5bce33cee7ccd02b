"""Measured values as text: one line per epoch and metric bundle, for the terminal and the logs.

Only the scalar summaries a metric already returns are shown (variables without a ``task``
dimension); a ``<name>_mean`` with its ``<name>_ci95`` reads ``name 0.713 ±0.012``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import xarray as xr

MEAN_SUFFIX = "_mean"
CI_SUFFIX = "_ci95"


def _scalar(dataset: xr.Dataset, name: str, epoch: int) -> float:
    return float(np.asarray(dataset[name].sel(epoch=epoch)).reshape(-1)[0])


def _number(value: float) -> str:
    return f"{value:.4g}"


def metric_summaries(dataset: xr.Dataset, epoch: int) -> list[str]:
    """``name value`` or ``name mean ±ci95`` for each scalar variable of ``dataset`` at ``epoch``."""
    scalars = [name for name in dataset.data_vars if "task" not in dataset[name].dims]
    parts = []
    for name in scalars:
        if name.endswith(CI_SUFFIX) and f"{name[: -len(CI_SUFFIX)]}{MEAN_SUFFIX}" in scalars:
            continue  # shown with its mean
        value = _scalar(dataset, name, epoch)
        if name.endswith(MEAN_SUFFIX):
            base = name[: -len(MEAN_SUFFIX)]
            interval = f"{base}{CI_SUFFIX}"
            if interval in scalars:
                spread = _scalar(dataset, interval, epoch)
                parts.append(f"{base} {_number(value)} ±{_number(spread)}")
                continue
        parts.append(f"{name} {_number(value)}")
    return parts


def epoch_lines(results: Mapping[str, xr.Dataset]) -> list[str]:
    """One line per measured epoch: ``epoch 3  accuracy_test 0.713 ±0.012  hessian_top 7.88``."""
    epochs = sorted(
        {int(epoch) for dataset in results.values() for epoch in dataset["epoch"].values}
    )
    lines = []
    for epoch in epochs:
        parts = [
            part
            for dataset in results.values()
            if epoch in dataset["epoch"].values
            for part in metric_summaries(dataset, epoch)
        ]
        lines.append("  ".join([f"epoch {epoch}", *parts]))
    return lines
