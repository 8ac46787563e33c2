"""Performance profiles over workloads (Dolan & Moré 2002, as AlgoPerf scores training algorithms,
Dahl et al. 2023, Sec. 4.5), from the time-to-target table.

For optimizer ``o`` and workload ``w`` let ``t[o, w]`` be the time to reach the workload's target
(:mod:`analysis.targets`; infinite when a seed does not reach it) and
``r[o, w] = t[o, w] / min_o' t[o', w]`` the ratio to the fastest optimizer on ``w``. The profile
is ``rho_o(tau) = |{w : r[o, w] <= tau}| / |W|``, for ``tau`` from 1 to ``TAU_MAX`` (AlgoPerf uses 4):
the fraction of workloads on which ``o`` is within a factor ``tau`` of the best. Measured in
iterations and in training seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.style import new_figure, optimizer_color, optimizer_sort_key, styled
from analysis.tables import fmt, markdown_table

TAU_MAX = 4.0
MEASURES = {"iterations": "iterations", "seconds": "training seconds"}
TAUS_SHOWN = (1.0, 1.5, 2.0, 4.0)


def ratios(table: pd.DataFrame, measure: str) -> pd.DataFrame:
    """``r[o, w]`` (rows: optimizers in the suite's order, columns: workloads); inf = not reached,
    NaN = the optimizer did not run on the workload or no optimizer reached the target there."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {list(MEASURES)}, got {measure!r}")
    # a solver is an optimizer when it has one configuration per workload (labels then may differ
    # between workloads only by workload settings), else one configuration
    one_each = "label" not in table or table.groupby(["workload", "optimizer"])["label"].nunique().max() <= 1
    solver = "optimizer" if one_each else "label"
    ran = table.pivot(index=solver, columns="workload", values="seeds").notna()
    reached = table.pivot(index=solver, columns="workload", values=measure).astype(float).notna()
    # seconds compare only on one clock: each optimizer's seconds relative to sgd's run in the same
    # process (analysis.targets.same_process_ratio); NaN where it shared no process with sgd
    values = "seconds_ratio" if measure == "seconds" and "seconds_ratio" in table else measure
    t = table.pivot(index=solver, columns="workload", values=values).astype(float)
    t = t.where(~(~reached & ran), np.inf)  # ran but not every seed reached the target
    best = t.replace(np.inf, np.nan).min(axis=0)
    r = t / best
    r = r.loc[:, best.notna()]
    return r.loc[sorted(r.index, key=lambda lab: (optimizer_sort_key(str(lab).split(' ')[0]), str(lab)))]


def profile(r: pd.DataFrame, taus: np.ndarray) -> pd.DataFrame:
    """``rho_o(tau)`` for each optimizer (rows) and tau (columns); workloads an optimizer did not run
    on count against it."""
    n = r.shape[1]
    if n == 0:
        return pd.DataFrame(index=r.index, columns=taus, dtype=float)
    vals = np.array([[(r.loc[o].to_numpy() <= tau).sum() / n for tau in taus] for o in r.index])
    return pd.DataFrame(vals, index=r.index, columns=taus)


def profile_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Long table: measure, optimizer, the ratio on each workload, and rho at the shown taus."""
    rows = []
    for measure in MEASURES:
        r = ratios(table, measure)
        rho = profile(r, np.array(TAUS_SHOWN))
        for o in r.index:
            row = {"measure": measure, "optimizer": o}
            row.update({f"r.{w}": r.loc[o, w] for w in r.columns})
            row.update({f"rho@{tau:g}": rho.loc[o, tau] for tau in TAUS_SHOWN})
            rows.append(row)
    return pd.DataFrame(rows)


def profile_markdown(summary: pd.DataFrame) -> str:
    caption = (
        "Performance profiles over workloads (AlgoPerf): r = an optimizer's time to the workload's target "
        "divided by the fastest optimizer's (inf = a seed never reached it); rho(tau) = fraction of workloads "
        "with r <= tau. Workloads where no optimizer reached the target are left out. In seconds each "
        "optimizer's time is first taken relative to sgd's run of the same seed in the same process (one "
        "clock); '–' where the two never shared a process, which counts as not within tau.\n"
    )
    parts = [caption]
    for measure, name in MEASURES.items():
        sub = summary[summary["measure"] == measure]
        workloads = [c[2:] for c in sub.columns if c.startswith("r.") and sub[c].notna().any()]
        header = ["optimizer", *[f"r: {w}" for w in workloads], *[f"rho({t:g})" for t in TAUS_SHOWN]]
        body = [[r["optimizer"], *[("inf" if np.isinf(r[f"r.{w}"]) else fmt(r[f"r.{w}"], 2, "–")) for w in workloads],
                 *[fmt(r[f"rho@{t:g}"], 2) for t in TAUS_SHOWN]] for _, r in sub.iterrows()]
        parts.append(f"In {name}:\n\n" + markdown_table(header, body, "l" + "r" * (len(header) - 1)))
    return "\n\n".join(parts)


def plot_profiles(table: pd.DataFrame) -> Figure:
    """One panel per measure: rho_o(tau) as steps, tau from 1 to TAU_MAX (log scale)."""
    taus = np.exp(np.linspace(0.0, np.log(TAU_MAX), 200))
    with styled():
        fig, axes = new_figure(1, len(MEASURES), width=5.0 * len(MEASURES), height=3.6)
        for ax, (measure, name) in zip(np.atleast_1d(axes), MEASURES.items()):
            r = ratios(table, measure)
            rho = profile(r, taus)
            for o in rho.index:
                color = optimizer_color(str(o).split(" ")[0])  # a label starts with its optimizer's name
                ax.step(taus, rho.loc[o].to_numpy(), where="post", label=o, color=color, lw=1.8)
            ax.set_xscale("log")
            ax.set_xlim(1.0, TAU_MAX)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"tau (ratio to the fastest, {name})")
            ax.set_ylabel("fraction of workloads within tau")
            ax.set_title(f"Performance profile ({r.shape[1]} workloads)")
        np.atleast_1d(axes)[-1].legend(fontsize=8, loc="lower right")
        return fig
