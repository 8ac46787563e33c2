"""The paper-style figure: test accuracy against epoch and against training time, every optimizer, one
panel per workload of the paper (``python -m experiments.suite --preset paper``, ``bash run_all.sh --paper``).

Niu et al. (TMLR 2023) show, per workload (ResNet-18 on CIFAR-10 and CIFAR-100, DeiT on CIFAR-100,
ResNet-50 on ImageNet), test accuracy against epochs and against wall-clock time for SGD, Adam, K-FAC,
SLIM and mL-BFGS. This group draws the same from whatever runs of those workloads a results tree holds
(any length: the fixtures of the tests train a few iterations): one column per workload, the top row
against epochs, the bottom row against training seconds (the runner's ``wall_s``: batch, forward,
backward and step; evaluation excluded), one curve per configuration (:mod:`analysis.configs`; labels
name what tells the configurations of a workload apart), mean over seeds with the min-max band. The
table gives, per workload and configuration, the seeds, the epochs trained, the final and best test
accuracy (mean over seeds; final = the last evaluation) and the training seconds.

Runs of other workloads are not part of it; a tree without runs of the paper's workloads skips the group.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from analysis.configs import with_labels
from analysis.curves import draw_band, evals, seed_band
from analysis.load import Results
from analysis.style import line_style, new_figure, optimizer_color, optimizer_sort_key, styled
from analysis.tables import fmt, markdown_table

#: The paper's workloads, in the order of the panels (experiments/suite/presets/paper.json).
PAPER_WORKLOADS: tuple[str, ...] = ("cifar10-resnet18", "cifar100-resnet18", "cifar100-deit", "imagenet-resnet50")

SUMMARY_COLUMNS: tuple[str, ...] = ("workload", "configuration", "optimizer", "seeds", "epochs", "final_test_acc",
                                    "best_test_acc", "train_seconds")

#: Training-time units of the bottom row: the largest whose value is at least 2 at the end of the runs.
TIME_UNITS: tuple[tuple[str, float], ...] = (("h", 3600.0), ("min", 60.0), ("s", 1.0))


def load_paper_runs(data: Results) -> pd.DataFrame | None:
    """The rows of ``data.runs`` of the paper's workloads (:data:`PAPER_WORKLOADS`), each workload's
    configurations labelled (column ``label``); None when there are none."""
    if data.runs is None:
        return None
    runs = data.runs[data.runs["workload"].isin(PAPER_WORKLOADS)]
    if runs.empty:
        return None
    return pd.concat([with_labels(part) for _, part in runs.groupby("workload", sort=True)])


def _order(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """(workload, label) pairs in panel order, then optimizer display order."""
    first = runs.drop_duplicates(["workload", "label"])
    pairs = [(str(w), str(lab), str(o)) for w, lab, o in zip(first["workload"], first["label"], first["optimizer"],
                                                             strict=True)]
    pairs.sort(key=lambda p: (PAPER_WORKLOADS.index(p[0]), optimizer_sort_key(p[2]), p[1]))
    return [(w, lab) for w, lab, _ in pairs]


def paper_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per (workload, configuration): :data:`SUMMARY_COLUMNS`. ``epochs``: the most any seed
    trained; ``final_test_acc`` / ``best_test_acc``: the last / the highest evaluation of each run, mean
    over seeds; ``train_seconds``: the training seconds at the last row of each run, mean over seeds."""
    ev = evals(runs)
    rows = []
    for workload, label in _order(runs):
        part = runs[(runs["workload"] == workload) & (runs["label"] == label)]
        part_ev = ev[(ev["workload"] == workload) & (ev["label"] == label)]
        last = part.sort_values(["run_id", "iteration"], kind="stable").groupby("run_id").tail(1)
        per_run = part_ev.groupby("run_id")["test_acc"]
        rows.append({
            "workload": workload, "configuration": label, "optimizer": str(part["optimizer"].iloc[0]),
            "seeds": int(part["run_id"].nunique()),
            "epochs": float(part["epoch_progress"].max()),
            "final_test_acc": float(per_run.last().mean()) if len(part_ev) else np.nan,
            "best_test_acc": float(per_run.max().mean()) if len(part_ev) else np.nan,
            "train_seconds": float(last["wall_s"].mean()),
        })
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def paper_markdown(summary: pd.DataFrame) -> str:
    """The summary as a markdown table with its caption."""
    caption = ("Per workload of the paper and configuration: test accuracy at the last evaluation and the best "
               "one (mean over seeds), the epochs trained and the training seconds (evaluation excluded). "
               "Figure: paper_accuracy.png (test accuracy against epoch and against training time).\n\n")
    rows = [[r.workload, f"`{r.configuration}`", str(r.seeds), fmt(r.epochs, 2), fmt(r.final_test_acc, 4),
             fmt(r.best_test_acc, 4), fmt(r.train_seconds, 1)] for r in summary.itertuples()]
    header = ["workload", "configuration", "seeds", "epochs", "final test acc", "best test acc", "training s"]
    return caption + markdown_table(header, rows, "llrrrrr")


def eval_epochs(rows: pd.DataFrame) -> pd.Series:
    """Epochs completed at each eval row: the runner's ``epoch`` column (iteration / iterations per epoch, so
    the evaluation before training is at 0), else ``epoch_progress`` (:func:`analysis.load.epoch_progress`)."""
    epoch = pd.to_numeric(rows["epoch"], errors="coerce")
    return epoch.where(np.isfinite(epoch), rows["epoch_progress"])


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit of :data:`TIME_UNITS` for a time axis ending at ``seconds``: (name, seconds per unit)."""
    for name, size in TIME_UNITS:
        if seconds / size >= 2:
            return name, size
    return TIME_UNITS[-1]


def plot_paper(runs: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Test accuracy against epoch (top row) and training time (bottom row), one column per workload."""
    del summary
    ev = evals(runs)
    workloads = [w for w in PAPER_WORKLOADS if w in set(runs["workload"])]
    order = _order(runs)
    with styled():
        n = len(workloads)
        fig, axes = new_figure(2, n, 4.4 * n, 7.4)
        for col, workload in enumerate(workloads):
            top, bottom = axes[col], axes[n + col]
            w_ev = ev[ev["workload"] == workload]
            unit, size = time_unit(float(w_ev["wall_s"].max()) if len(w_ev) else 0.0)
            for w, label in order:
                if w != workload:
                    continue
                rows = w_ev[w_ev["label"] == label]
                if rows.empty:
                    continue
                optimizer = str(rows["optimizer"].iloc[0])
                style = line_style(optimizer)
                color = optimizer_color(optimizer)
                seeds = rows["run_id"].nunique()
                name = f"{label} ({seeds} seed{'s' if seeds != 1 else ''})"
                draw_band(top, seed_band(rows.assign(epochs=eval_epochs(rows)), "epochs", "test_acc"), color, style,
                          label=name)
                draw_band(bottom, seed_band(rows.assign(time=rows["wall_s"] / size), "time", "test_acc"), color,
                          style)
            top.set_title(workload)
            top.set_xlabel("epoch")
            bottom.set_xlabel(f"training time ({unit}, evaluation excluded)")
            for ax in (top, bottom):
                ax.set_ylabel("test accuracy (%)")
                ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            if top.get_legend_handles_labels()[0]:
                top.legend(loc="lower right", frameon=False)
        fig.suptitle("Test accuracy against epoch and training time (line: mean over seeds, band: min-max)")
    return fig
