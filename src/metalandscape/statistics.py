"""Statistics over seeds, used alike by the figures and the claims table.

One interval method: the mean over seeds with its Student-t 95% confidence interval, given only
when at least :data:`MIN_SEEDS_FOR_INTERVAL` (3) seeds are finite. With two seeds the t
multiplier is 12.7 and the "interval" says nothing; with one there is none. A quantity known to
lie in a range (accuracy in [0, 1], λmax ≥ 0) has its interval clipped to that range.

Correlations are computed per seed (:func:`per_seed_correlation`), then summarised with
:func:`correlation_interval`: the mean in Fisher's z = artanh(r) (|r| capped at
:data:`CORRELATION_CLIP`), the same t-interval on z, both mapped back with tanh, so the interval
lies inside (−1, 1).

Hand-written on purpose: scipy gives the t quantile, but not NaN-aware per-column summaries with
this minimum-seed rule and clipping.
"""

from __future__ import annotations

import math
import types
import warnings
from dataclasses import dataclass

import numpy as np


def _scipy_stats() -> types.ModuleType:
    """``scipy.stats``, imported on first use: it takes seconds, and planning the workflow
    imports this module through the figure specs without computing any statistic."""
    from scipy import stats

    return stats


#: Fewer finite seeds than this: mean only, no interval.
MIN_SEEDS_FOR_INTERVAL = 3
#: What the band/interval is, for captions and claims.md.
INTERVAL_DESCRIPTION = (
    f"mean over seeds with a Student-t 95% confidence interval (only with ≥ "
    f"{MIN_SEEDS_FOR_INTERVAL} seeds; correlations averaged in Fisher z; clipped to the "
    "range the quantity lives in)"
)


@dataclass(frozen=True)
class Interval:
    """Mean over seeds, its 95% interval (NaN when too few seeds) and the number of seeds."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: np.ndarray


def mean_interval(
    samples: np.ndarray, bounds: tuple[float, float] = (-math.inf, math.inf)
) -> Interval:
    """Mean over axis 0 (seeds) ignoring NaN, with the t-interval where ≥ 3 seeds are finite.

    ``bounds`` is the range the quantity lives in; the interval is clipped to it.
    """
    samples = np.asarray(samples, dtype=np.float64)
    seeds = np.isfinite(samples).sum(axis=0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.asarray(np.nanmean(samples, axis=0), dtype=np.float64)
        spread = np.asarray(np.nanstd(samples, axis=0, ddof=1), dtype=np.float64)
    half_width = np.full(mean.shape, np.nan)
    enough = seeds >= MIN_SEEDS_FOR_INTERVAL
    half_width[enough] = (
        _scipy_stats().t.ppf(0.975, seeds[enough] - 1) * spread[enough] / np.sqrt(seeds[enough])
    )
    low = np.clip(mean - half_width, *bounds)
    high = np.clip(mean + half_width, *bounds)
    return Interval(mean, low, high, seeds)


#: A per-seed |r| above this counts as this in Fisher z, where ±1 is infinite: a perfectly
#: monotone Spearman ρ over the epochs is common, and z(1 − 1e-12) = 14 made three seeds of
#: ρ = −1, −1, −0.98 an "interval" of [−1, 1].
CORRELATION_CLIP = 0.999


def correlation_interval(correlations: np.ndarray) -> Interval:
    """Per-seed correlations (axis 0) summarised in Fisher z: tanh of the z mean and interval."""
    r = np.clip(np.asarray(correlations, dtype=np.float64), -CORRELATION_CLIP, CORRELATION_CLIP)
    z = np.arctanh(r)
    interval = mean_interval(z)
    return Interval(
        np.tanh(interval.mean), np.tanh(interval.low), np.tanh(interval.high), interval.seeds
    )


def per_seed_correlation(x: np.ndarray, y: np.ndarray, kind: str = "pearson") -> float:
    """Pearson R (or Spearman ρ) of the finite pairs of one seed; NaN below 3 pairs or constant."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    both = np.isfinite(x) & np.isfinite(y)
    x, y = x[both], y[both]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    if kind == "pearson":
        return float(_scipy_stats().pearsonr(x, y).statistic)
    if kind == "spearman":
        return float(_scipy_stats().spearmanr(x, y).statistic)
    raise ValueError(f"correlation kind must be 'pearson' or 'spearman', got {kind!r}")


def scalar_interval(
    values: np.ndarray,
    *,
    correlation: bool = False,
    bounds: tuple[float, float] = (-math.inf, math.inf),
) -> tuple[float, float, float, int]:
    """(mean, low, high, seeds) of one per-seed statistic; correlations go through Fisher z,
    other statistics have their interval clipped to ``bounds`` (the range they live in)."""
    values = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    interval = correlation_interval(values) if correlation else mean_interval(values, bounds)
    return (
        float(interval.mean[0]),
        float(interval.low[0]),
        float(interval.high[0]),
        int(interval.seeds[0]),
    )
