"""Which runs make the main comparison and which make the beta ablation.

A workload may hold several mlbfgs configurations: the main one and the beta ablation (beta read from
the run manifest, see :func:`analysis.load.manifest_beta`). The convergence figures and the
time-to-target table compare one configuration per optimizer: for mlbfgs the runs with
``beta == main_beta`` (0.999, the library default); when no run has that beta, the beta with the most
runs (ties: the largest). The stability figure takes every mlbfgs/slbfgs run with a known beta.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: The mlbfgs beta of the main comparison (the library default).
MAIN_BETA = 0.999

#: Optimizers whose runs form the beta ablation.
ABLATION_OPTIMIZERS: tuple[str, ...] = ("mlbfgs", "slbfgs")


def chosen_beta(betas: pd.Series, main_beta: float = MAIN_BETA) -> float | None:
    """The beta of the main comparison among the per-run ``betas`` (one entry per run).

    ``main_beta`` when present, otherwise the most common beta (ties: the largest); ``None`` when no
    run has a known beta.
    """
    known = betas.dropna()
    if known.empty:
        return None
    if np.isclose(known, main_beta).any():
        return float(main_beta)
    counts = known.round(12).value_counts()
    best = counts[counts == counts.max()].index
    return float(max(best))


def main_runs(runs: pd.DataFrame, main_beta: float = MAIN_BETA) -> pd.DataFrame:
    """Rows of the main comparison: every run, except mlbfgs runs whose beta is not the chosen one
    (see :func:`chosen_beta`, decided per workload). mlbfgs runs without a known beta are kept only
    when no mlbfgs run of the workload has one."""
    keep = pd.Series(True, index=runs.index)
    for _workload, group in runs[runs["optimizer"] == "mlbfgs"].groupby("workload", sort=True):
        per_run = group.drop_duplicates("run_id")["beta"]
        beta = chosen_beta(per_run, main_beta)
        if beta is None:
            continue
        keep.loc[group.index] = np.isclose(group["beta"].to_numpy(dtype=float), beta)
    return runs[keep]


def ablation_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows of the beta ablation: mlbfgs and slbfgs runs with a known beta (slbfgs counts as 0).

    Runs that differ in anything but the seed are never averaged: when one beta of a workload holds
    several configurations (column ``config``, :mod:`analysis.configs`), the ablation takes the one
    with the most runs (ties: the first configuration key); the others appear in the convergence
    figures only."""
    mask = runs["optimizer"].isin(ABLATION_OPTIMIZERS) & runs["beta"].notna()
    abl = runs[mask]
    if "config" not in abl or abl.empty:
        return abl
    per_run = abl.drop_duplicates("run_id")
    counts = per_run.groupby(["workload", "beta", "config"]).size().reset_index(name="n")
    counts = counts.sort_values(["workload", "beta", "n", "config"], ascending=[True, True, False, True])
    chosen = set(counts.drop_duplicates(["workload", "beta"])["config"])
    return abl[abl["config"].isin(chosen)]
