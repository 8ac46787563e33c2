"""95% intervals against independent computations: Student's t by its formula, the bootstrap by a
plain numpy resampling, and the verdict rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.intervals import Interval, difference_interval, mean_interval, verdict


def test_mean_interval_covers_t_and_a_numpy_bootstrap() -> None:
    x = [0.88, 0.87, 0.895, 0.86, 0.9]
    iv = mean_interval(x)
    n, m, sd = len(x), float(np.mean(x)), float(np.std(x, ddof=1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)  # the t interval by its formula
    assert iv.value == pytest.approx(m)
    assert iv.low <= m - half + 1e-12 and iv.high >= m + half - 1e-12
    rng = np.random.default_rng(1)
    boot = rng.choice(x, size=(20_000, n)).mean(axis=1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    assert iv.low <= lo + 2e-3 and iv.high >= hi - 2e-3  # a plain resampling agrees up to its noise


def test_difference_is_level_when_seeds_overlap_and_different_when_they_do_not() -> None:
    # the fmnist-cnn finals that README once ordered: Welch p ~ 0.1
    close = difference_interval([0.9237, 0.9225, 0.9249], [0.9258, 0.9245, 0.9271])
    assert close.low < 0 < close.high and verdict(close) == "level"
    assert stats.ttest_ind([0.9237, 0.9225, 0.9249], [0.9258, 0.9245, 0.9271], equal_var=False).pvalue > 0.05
    far = difference_interval([0.88, 0.87, 0.89], [0.92, 0.925, 0.923])
    assert far.high < 0 and verdict(far) == "worse" and verdict(far, higher_is_better=False) == "better"


def test_too_few_values_give_no_interval() -> None:
    one = mean_interval([0.5])
    assert one.value == 0.5 and math.isnan(one.low) and one.text() == "0.5000"
    assert math.isnan(mean_interval([]).value)
    assert verdict(difference_interval([0.5], [0.4])) == "level"
    assert Interval(1.0, 0.5, 1.5, 3).text(2) == "1.00 [0.50, 1.50]"
