"""Orderings that the seeds support: ours against every other optimizer, per workload, on the final
test accuracy, with the 95% interval of the difference (:mod:`analysis.intervals`).

This table is where the verdict's words come from: "better" or "worse" only where the interval of the
difference excludes zero, "level" otherwise. ``tests/repo/test_verdict_words.py`` holds README and the
findings page to it: a sentence there that orders two optimizers on a workload must use these words,
and the word this table gives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.configs import with_labels
from analysis.curves import evals
from analysis.intervals import difference_interval, verdict
from analysis.select import MAIN_BETA, main_runs
from analysis.style import optimizer_sort_key
from analysis.tables import fmt, markdown_table

OURS = "mlbfgs"

#: Columns of :func:`orderings` (and of ``orderings.csv``).
COLUMNS: tuple[str, ...] = ("workload", "label", "other", "seeds", "other_seeds", "final", "other_final",
                            "difference", "low", "high", "verdict")


def final_accuracies(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per run: workload, label (the configuration, :func:`analysis.configs.with_labels` per
    workload), optimizer, run_id, final test accuracy (the last evaluation)."""
    rows = []
    for workload in sorted(runs["workload"].dropna().unique()):
        wl = with_labels(runs[runs["workload"] == workload])
        ev = evals(wl).dropna(subset=["test_acc"]).sort_values(["run_id", "iteration"], kind="stable")
        last = ev.groupby("run_id").last()
        for run_id, row in last.iterrows():
            rows.append({"workload": workload, "label": row["label"], "optimizer": row["optimizer"],
                         "run_id": run_id, "final": float(row["test_acc"])})
    return pd.DataFrame(rows, columns=["workload", "label", "optimizer", "run_id", "final"])


def orderings(runs: pd.DataFrame, ours: str = OURS, main_beta: float = MAIN_BETA) -> pd.DataFrame:
    """Per workload, each configuration of ``ours`` against every other configuration of the main
    comparison (:func:`analysis.select.main_runs`): the difference of the mean final test accuracies
    (``ours`` minus the other) with its 95% interval and the verdict for ``ours``."""
    finals = final_accuracies(main_runs(runs, main_beta))
    rows = []
    for workload, wl in finals.groupby("workload", sort=True):
        labels = sorted(wl["label"].unique(), key=lambda lab: (optimizer_sort_key(
            str(wl.loc[wl["label"] == lab, "optimizer"].iloc[0])), lab))
        for mine in [lab for lab in labels if (wl.loc[wl["label"] == lab, "optimizer"] == ours).all()]:
            a = wl.loc[wl["label"] == mine, "final"].tolist()
            for other in labels:
                if other == mine:
                    continue
                b = wl.loc[wl["label"] == other, "final"].tolist()
                diff = difference_interval(a, b)
                rows.append({"workload": workload, "label": mine, "other": other, "seeds": len(a),
                             "other_seeds": len(b), "final": float(np.mean(a)), "other_final": float(np.mean(b)),
                             "difference": diff.value, "low": diff.low, "high": diff.high,
                             "verdict": verdict(diff)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def orderings_markdown(table: pd.DataFrame) -> str:
    caption = ("Final test accuracy (last evaluation) of mL-BFGS (ours) against every other optimizer of the "
               "comparison: the difference of the means over seeds (ours minus the other) with its 95% "
               "interval (analysis/intervals.py). 'better' / 'worse' only where the interval excludes zero, "
               "else 'level'.\n")
    header = ["workload", "ours", "other", "seeds", "ours final", "other final", "difference [95%]", "verdict"]
    body = [[r.workload, r.label, r.other, f"{r.seeds} / {r.other_seeds}", fmt(r.final, 4), fmt(r.other_final, 4),
             f"{r.difference:+.4f} [{r.low:+.4f}, {r.high:+.4f}]" if np.isfinite(r.low) else f"{r.difference:+.4f}",
             r.verdict] for r in table.itertuples()]
    return caption + "\n" + markdown_table(header, body, "lllrrrrl")
