"""The one interval method over seeds, the per-seed correlation: known data, known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from metalandscape.statistics import (
    CORRELATION_CLIP,
    correlation_interval,
    mean_interval,
    per_seed_correlation,
    scalar_interval,
)

T_975_2DOF = 4.302652729911275  # Student-t 97.5% quantile, 2 degrees of freedom (tables)


def test_three_seeds_give_the_t_interval():
    interval = mean_interval(np.array([[1.0], [2.0], [3.0]]))
    half = T_975_2DOF * 1.0 / math.sqrt(3)  # sd of 1, 2, 3 is 1
    assert interval.mean[0] == pytest.approx(2.0)
    assert interval.low[0] == pytest.approx(2.0 - half)
    assert interval.high[0] == pytest.approx(2.0 + half)
    assert interval.seeds[0] == 3


def test_fewer_than_three_seeds_give_no_interval():
    interval = mean_interval(np.array([[1.0, 5.0, np.nan], [3.0, np.nan, np.nan]]))
    assert interval.mean[:2].tolist() == [2.0, 5.0]
    assert np.isnan(interval.mean[2])
    assert np.isnan(interval.low).all() and np.isnan(interval.high).all()
    assert interval.seeds.tolist() == [2, 1, 0]


def test_nan_seeds_are_left_out_of_the_interval():
    interval = mean_interval(np.array([[1.0], [np.nan], [2.0], [3.0]]))
    assert interval.seeds[0] == 3 and interval.mean[0] == pytest.approx(2.0)


def test_bounded_quantities_stay_in_range():
    accuracy = np.array([[0.99], [0.6], [1.0]])
    interval = mean_interval(accuracy, bounds=(0.0, 1.0))
    assert interval.high[0] == 1.0 and 0.0 <= interval.low[0] < interval.mean[0]


def test_correlations_average_in_fisher_z_and_stay_inside_minus_one_one():
    interval = correlation_interval(np.tanh(np.array([[0.0], [1.0], [2.0]])))
    half = T_975_2DOF / math.sqrt(3)  # z = 0, 1, 2: mean 1, sd 1
    assert interval.mean[0] == pytest.approx(math.tanh(1.0))
    assert interval.low[0] == pytest.approx(math.tanh(1.0 - half))
    assert interval.high[0] == pytest.approx(math.tanh(1.0 + half))
    extreme = correlation_interval(np.array([[0.2], [0.999], [1.0]]))
    assert -1.0 <= extreme.low[0] < extreme.mean[0] < extreme.high[0] <= 1.0


def test_per_seed_correlation_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert per_seed_correlation(x, 2 * x + 1) == pytest.approx(1.0)
    assert per_seed_correlation(x, -(x**3), "spearman") == pytest.approx(-1.0)
    # Pearson of (1,2,3) with (1,3,2): covariance 0.5 over variances 1 and 1.
    assert per_seed_correlation(x[:3], np.array([1.0, 3.0, 2.0])) == pytest.approx(0.5)
    assert math.isnan(per_seed_correlation(x[:2], x[:2]))
    assert math.isnan(per_seed_correlation(x, np.ones(4)))
    assert per_seed_correlation(
        np.array([1.0, np.nan, 2.0, 3.0]), np.array([2.0, 5.0, 4.0, 6.0])
    ) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="pearson"):
        per_seed_correlation(x, x, "kendall")


def test_scalar_interval_counts_seeds():
    mean, low, high, seeds = scalar_interval(np.array([0.736]))
    assert (mean, seeds) == (pytest.approx(0.736), 1)
    assert math.isnan(low) and math.isnan(high)


def test_perfect_correlations_do_not_blow_up_the_interval():
    """ρ = −1 for two seeds and −0.98 for one: a clearly negative interval, not [−1, 1]."""
    interval = correlation_interval(np.array([[-1.0], [-1.0], [-0.98]]))
    z = np.arctanh(np.array([-CORRELATION_CLIP, -CORRELATION_CLIP, -0.98]))
    half = T_975_2DOF * z.std(ddof=1) / math.sqrt(3)
    assert interval.mean[0] == pytest.approx(math.tanh(z.mean()))
    assert interval.low[0] == pytest.approx(math.tanh(z.mean() - half))
    assert interval.high[0] == pytest.approx(math.tanh(z.mean() + half))
    assert interval.high[0] < -0.5


def test_bounded_statistics_keep_their_interval_in_range():
    mean, low, high, seeds = scalar_interval(np.array([0.9, 1.0, 1.0]), bounds=(0.0, 1.0))
    assert seeds == 3 and low < mean < high == 1.0
    mean, low, high, _ = scalar_interval(np.array([0.05, 0.6, 0.2]), bounds=(0.0, math.inf))
    assert low == 0.0 and high > mean
