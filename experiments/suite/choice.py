"""The choice among candidate runs (the learning-rate sweep's rates, the tuning trials' settings).

A candidate's score is its final test accuracy, ties broken by the lower final training loss
(:func:`analysis.finals.final_metrics` reads both from the run CSV); a run with a non-finite accuracy or
loss (diverged, or not finished) ranks last. Among equal scores the first candidate listed wins.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from experiments.runner.manifest import is_finished


def final_metrics_of(manifest: Path) -> tuple[float, float]:
    """(final test accuracy, final training loss) of the run whose manifest is ``manifest``: NaN for both
    unless the run is finished (its CSV, next to the manifest, read by :mod:`analysis.finals`)."""
    from analysis.finals import final_metrics

    if not is_finished(manifest):
        return math.nan, math.nan
    return final_metrics(manifest.with_suffix(".csv"))


def score(row: dict[str, Any]) -> tuple[float, float]:
    """The ranking key of a candidate row with ``final_test_acc`` and ``final_train_loss``: higher is better."""
    acc, loss = row["final_test_acc"], row["final_train_loss"]
    if not math.isfinite(acc) or not math.isfinite(loss):
        return (-math.inf, -math.inf)
    return (acc, -loss)


def mark_best(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The best row per (``workload``, ``optimizer``) by :func:`score` (the first of equal ones); sets
    ``row["chosen"]`` (the last column of the tables) on every row."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["workload"], row["optimizer"])
        if key not in best or score(row) > score(best[key]):
            best[key] = row
    for row in rows:
        row["chosen"] = best[(row["workload"], row["optimizer"])] is row
    return best
