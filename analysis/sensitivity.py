"""Learning-rate sensitivity of the tuning trials (DeepOBS style): final test accuracy against lr.

Reads ``<results>/tuning/<preset>_trials.csv`` (written by the tuning stage of ``python -m experiments.suite``): one row
per trial with its settings (``setting.lr``, ...), final test accuracy and training loss, and whether
it was chosen. The figure has one panel per workload, a line of trials per optimizer sorted by lr, the
chosen trial ringed; trials that diverged sit at the bottom as crosses. A trial diverged when its final
train loss or test accuracy is not finite (a model with NaN weights still gets an accuracy from argmax,
e.g. 0.1 on 10 classes, so the accuracy alone does not tell). The table lists, per workload and
optimizer, the trials run, those that stayed finite, the chosen settings and the spread of the final
accuracy over the finite trials.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.load import read_checked_csv
from analysis.style import new_figure, optimizer_color, plain_log_ticks, sort_optimizers, styled
from analysis.tables import fmt, markdown_table

COLUMNS: tuple[str, ...] = ("workload", "optimizer", "trial", "setting.lr", "final_test_acc", "final_train_loss",
                            "chosen")


def load_trials(results: Path | str) -> pd.DataFrame | None:
    """Every trials table under ``<results>/tuning`` in one frame (None when there is none)."""
    frames = []
    for path in sorted((Path(results) / "tuning").glob("*_trials.csv")):
        df = read_checked_csv(path, COLUMNS, ("trial", "setting.lr", "final_test_acc", "final_train_loss"))
        df["chosen"] = df["chosen"].astype(str) == "True"
        df["source"] = path.name
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else None


def is_finite_trial(trials: pd.DataFrame) -> pd.Series:
    """True for the trials whose final test accuracy and train loss are both finite (the others diverged)."""
    return pd.Series(np.isfinite(trials["final_test_acc"]) & np.isfinite(trials["final_train_loss"]),
                     index=trials.index)


def sensitivity_summary(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, optimizer): trials, finite trials, chosen settings, best / median / worst final
    test accuracy over the finite trials."""
    rows = []
    settings = [c for c in trials.columns if c.startswith("setting.")]
    for (workload, optimizer), sub in trials.groupby(["workload", "optimizer"], sort=True):
        chosen = sub[sub["chosen"]]
        acc = sub["final_test_acc"][is_finite_trial(sub)]
        picked = chosen.iloc[0] if len(chosen) else None
        rows.append({"workload": workload, "optimizer": optimizer, "trials": len(sub),
                     "finite": len(acc),
                     "chosen": "" if picked is None else " ".join(
                         f"{c.split('.', 1)[1]}={picked[c]:g}" if isinstance(picked[c], float) else
                         f"{c.split('.', 1)[1]}={picked[c]}" for c in settings if pd.notna(picked[c])),
                     "best_acc": acc.max(), "median_acc": acc.median(), "worst_acc": acc.min()})
    out = pd.DataFrame(rows)
    order = {n: i for i, n in enumerate(sort_optimizers(out["optimizer"]))}
    return out.sort_values(["workload", "optimizer"], key=lambda c: c.map(order) if c.name == "optimizer" else c,
                           kind="stable").reset_index(drop=True)


def sensitivity_markdown(summary: pd.DataFrame) -> str:
    caption = ("Tuning trials (quasi-random search, the same number for every optimizer, seed 0): the settings "
               "chosen (highest final test accuracy) and the final test accuracy over the finite trials "
               "(\"finite\": final train loss and test accuracy finite; the others diverged).\n")
    header = ["workload", "optimizer", "trials", "finite", "chosen settings", "best", "median", "worst"]
    body = [[r.workload, r.optimizer, str(r.trials), str(r.finite), r.chosen, fmt(r.best_acc, 4),
             fmt(r.median_acc, 4), fmt(r.worst_acc, 4)] for r in summary.itertuples()]
    return caption + "\n" + markdown_table(header, body, "llrrlrrr")


def plot_sensitivity(trials: pd.DataFrame) -> Figure:
    workloads = sorted(trials["workload"].unique())
    with styled():
        fig, axes = new_figure(1, len(workloads), 5.5 * len(workloads), 4.2)
        for ax, workload in zip(axes, workloads, strict=True):
            sub = trials[trials["workload"] == workload]
            finite = sub["final_test_acc"][is_finite_trial(sub)]
            floor = float(finite.min()) - 0.02 if len(finite) else 0.0
            for optimizer in sort_optimizers(sub["optimizer"]):
                rows = sub[sub["optimizer"] == optimizer].sort_values("setting.lr")
                color = optimizer_color(optimizer)
                finite_rows = is_finite_trial(rows)
                ok = rows[finite_rows]
                ax.plot(ok["setting.lr"], ok["final_test_acc"], "o-", color=color, label=optimizer, markersize=4)
                bad = rows[~finite_rows]
                ax.plot(bad["setting.lr"], [floor] * len(bad), "x", color=color)
                best = rows[rows["chosen"]]
                ax.plot(best["setting.lr"], best["final_test_acc"], "o", markersize=11, markerfacecolor="none",
                        markeredgecolor=color)
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
            ax.set_xlabel("learning rate")
            ax.set_ylabel("final test accuracy")
            ax.set_title(workload)
        axes[0].legend(fontsize=8)
        fig.suptitle("Learning-rate sensitivity of the tuning trials (ringed: chosen; ×: diverged)")
    return fig
