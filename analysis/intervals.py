"""95% bootstrap confidence intervals and the rule that turns them into words.

Every comparison in the tables and in README goes through here (Agarwal et al. 2021, "Deep RL at the
Edge of the Statistical Precipice"; AlgoPerf): the interval of a mean over seeds, and the interval of
the difference of two methods' means (seeds resampled independently within each method). Two methods
are called different only where the interval of their difference excludes zero, otherwise "level".

The resampling is :func:`scipy.stats.bootstrap` (percentile method: BCa needs more seeds than a long
run can afford) with a fixed random state, so a table regenerates to the same digits. With the 3-5
seeds a long run affords, the percentile bootstrap alone is too narrow (three values have ten distinct
resamples, and the interval cannot reach beyond the extreme values), so every interval here is the union
of the bootstrap interval and Student's t interval (Welch's for a difference): the wider of the two
at each end. With many seeds the two agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

LEVEL = 0.95
RESAMPLES = 10_000
RANDOM_STATE = 0


@dataclass(frozen=True)
class Interval:
    """A statistic with its 95% interval; ``n`` values (seeds) behind it."""

    value: float
    low: float
    high: float
    n: int

    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)

    def text(self, digits: int = 4) -> str:
        """``value [low, high]``; the value alone with one seed (no interval)."""
        if not np.isfinite(self.value):
            return "–"
        if self.n < 2 or not (np.isfinite(self.low) and np.isfinite(self.high)):
            return f"{self.value:.{digits}f}"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _clean(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if np.isfinite(v)], dtype=float)


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` (NaN dropped) with its 95% percentile-bootstrap interval; the interval is
    the value itself when all values are equal, NaN with fewer than two values."""
    x = _clean(values)
    if len(x) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(x.mean())
    if len(x) < 2:
        return Interval(mean, float("nan"), float("nan"), 1)
    if np.ptp(x) == 0:
        return Interval(mean, mean, mean, len(x))
    res = stats.bootstrap((x,), np.mean, confidence_level=LEVEL, n_resamples=RESAMPLES, method="percentile",
                          random_state=RANDOM_STATE)
    t = stats.ttest_1samp(x, 0.0).confidence_interval(LEVEL)
    return _union(mean, res.confidence_interval, t, len(x))


def _union(value: float, boot: object, t: object, n: int) -> Interval:
    low = min(float(boot.low), float(t.low))  # type: ignore[attr-defined]
    high = max(float(boot.high), float(t.high))  # type: ignore[attr-defined]
    return Interval(value, low, high, n)


def difference_interval(a: Sequence[float], b: Sequence[float]) -> Interval:
    """``mean(a) - mean(b)`` with its 95% interval, each sample resampled on its own (seeds of two
    methods are independent runs). NaN with fewer than two values on either side."""
    x, y = _clean(a), _clean(b)
    if len(x) == 0 or len(y) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    diff = float(x.mean() - y.mean())
    n = min(len(x), len(y))
    if n < 2:
        return Interval(diff, float("nan"), float("nan"), n)
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return Interval(diff, diff, diff, n)

    def statistic(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.mean(u, axis=axis) - np.mean(v, axis=axis)

    res = stats.bootstrap((x, y), statistic, confidence_level=LEVEL, n_resamples=RESAMPLES, method="percentile",
                          random_state=RANDOM_STATE, paired=False)
    t = stats.ttest_ind(x, y, equal_var=False).confidence_interval(LEVEL)
    return _union(diff, res.confidence_interval, t, n)


def verdict(diff: Interval, higher_is_better: bool = True) -> str:
    """"better", "worse" or "level" for the first method of ``diff`` against the second."""
    if not diff.excludes_zero():
        return "level"
    return "better" if (diff.low > 0) == higher_is_better else "worse"
