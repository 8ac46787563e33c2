"""Target sensitivity: time to target against the target, from 0.95 to 0.995 of the reference's final.

A single target can flatter one optimizer: evaluations come every few hundred iterations, and an
optimizer that crosses 0.99 x the reference just before an evaluation gains a whole interval. The
table and figure repeat :func:`analysis.targets.time_to_target` at each fraction of the rule, so a
reader sees whether an ordering holds across targets or only at one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.style import new_figure, optimizer_color, styled
from analysis.tables import fmt, markdown_table
from analysis.targets import TargetRule, time_to_target

#: The fractions of the reference's final metric at which the target is set.
FRACTIONS: tuple[float, ...] = (0.95, 0.96, 0.97, 0.98, 0.985, 0.99, 0.995)


def target_sensitivity(runs: pd.DataFrame, rule: TargetRule, fractions: tuple[float, ...] = FRACTIONS) -> pd.DataFrame:
    """Rows (workload, label, optimizer, fraction, target, seeds_reached, seeds, iterations,
    iterations_ratio) of the time-to-target table at every fraction, the rule otherwise unchanged."""
    frames = []
    for fraction in fractions:
        table = time_to_target(runs, replace(rule, fraction=fraction, per_workload=()))
        frames.append(table.assign(fraction=fraction)[
            ["workload", "label", "optimizer", "fraction", "target", "seeds_reached", "seeds", "iterations",
             "iterations_ratio"]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def sensitivity_markdown(table: pd.DataFrame, reference: str) -> str:
    caption = (f"Iterations to target (median over seeds, AlgoPerf's rule) divided by {reference}'s, with the "
               f"target at each fraction of {reference}'s final test accuracy (mean over seeds); "
               "'not reached' where fewer than half the seeds reach it.\n")
    parts = [caption]
    for workload, sub in table.groupby("workload", sort=True):
        fractions = sorted(sub["fraction"].unique())
        header = ["optimizer", *[f"{f:g}" for f in fractions]]
        body = []
        for label, rows in sub.groupby("label", sort=False):
            by = rows.set_index("fraction")
            body.append([label, *[fmt(by.at[f, "iterations_ratio"], 3, "not reached")
                                  if np.isfinite(by.at[f, "iterations"]) else "not reached" for f in fractions]])
        parts.append(f"### {workload}\n\n" + markdown_table(header, body))
    return "\n".join(parts)


def plot_target_sensitivity(table: pd.DataFrame, reference: str) -> Figure:
    """Per workload, iterations to target against the target fraction, one line per configuration."""
    workloads = sorted(table["workload"].unique())
    with styled():
        fig, axes = new_figure(1, max(1, len(workloads)), 5.0 * max(1, len(workloads)), 4.0)
        for ax, workload in zip(axes, workloads, strict=False):
            sub = table[table["workload"] == workload]
            for label, rows in sub.groupby("label", sort=False):
                rows = rows.sort_values("fraction")
                ax.plot(rows["fraction"], rows["iterations"], marker="o", markersize=3, label=label,
                        color=optimizer_color(str(rows["optimizer"].iloc[0])))
            ax.set_yscale("log")
            ax.set_xlabel(f"target / {reference}'s final test accuracy")
            ax.set_ylabel("iterations to target (median over seeds)")
            ax.set_title(workload)
            ax.legend(fontsize=6)
        fig.suptitle("Target sensitivity: does the ordering hold across targets?")
    return fig
