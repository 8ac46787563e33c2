"""Per-step and per-iteration cost of each optimizer relative to sgd (``results/overhead/*.csv``).

``step``: the optimizer's ``step`` alone; ``iteration``: forward, backward and step. The summary takes
the median over repeats of each (model, optimizer, measure) and divides it by sgd's median for the
same model and measure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.load import OVERHEAD_MEASURES
from analysis.style import (
    new_figure,
    optimizer_color,
    optimizer_sort_key,
    plain_log_ticks,
    sort_optimizers,
    styled,
)
from analysis.tables import fmt, markdown_table

REFERENCE = "sgd"

#: Columns of :func:`overhead_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = ("model", "optimizer", "measure", "repeats", "median_s", "ratio")


def overhead_summary(overhead: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Median seconds over repeats per (model, optimizer, measure) and the ratio to ``reference``
    (NaN when the reference lacks that model/measure). Rows sorted by model, measure, optimizer order."""
    grouped = overhead.groupby(["model", "optimizer", "measure"], sort=True)["seconds"]
    summary = grouped.agg(repeats="count", median_s="median").reset_index()
    ref = summary[summary["optimizer"] == reference].set_index(["model", "measure"])["median_s"]
    keys = pd.MultiIndex.from_frame(summary[["model", "measure"]])
    summary["ratio"] = summary["median_s"].to_numpy() / ref.reindex(keys).to_numpy()
    summary["_m"] = summary["measure"].map({m: i for i, m in enumerate(OVERHEAD_MEASURES)})
    summary["_o"] = summary["optimizer"].map(optimizer_sort_key)
    summary = summary.sort_values(["model", "_m", "_o"], kind="stable").drop(columns=["_m", "_o"])
    summary["repeats"] = summary["repeats"].astype(int)
    return summary[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def overhead_markdown(summary: pd.DataFrame, reference: str = REFERENCE) -> str:
    """Markdown table: per model and optimizer the median milliseconds per step and per iteration
    and their ratios to ``reference``."""
    caption = (
        f"Median wall-clock milliseconds over repeats; 'step' = optimizer step only, 'iteration' = "
        f"forward + backward + step; '/ {reference}' = ratio to {reference}'s median on the same model.\n"
    )
    header = ["model", "optimizer", "step (ms)", f"step / {reference}", "iteration (ms)", f"iteration / {reference}"]
    body = []
    for model in sorted(summary["model"].unique()):
        sub = summary[summary["model"] == model]
        for optimizer in sort_optimizers(sub["optimizer"]):
            cells = [model, optimizer]
            for measure in OVERHEAD_MEASURES:
                row = sub[(sub["optimizer"] == optimizer) & (sub["measure"] == measure)]
                median = row["median_s"].iloc[0] * 1e3 if len(row) else np.nan
                ratio = row["ratio"].iloc[0] if len(row) else np.nan
                cells += [fmt(median, 3), fmt(ratio, 2)]
            body.append(cells)
    return caption + "\n" + markdown_table(header, body, "llrrrr")


def plot_overhead(summary: pd.DataFrame, reference: str = REFERENCE) -> Figure:
    """Bar chart, one panel per measure: per model a bar per optimizer whose height is the median
    time relative to ``reference`` (log axis, dashed line at 1), labelled with the ratio."""
    models = sorted(summary["model"].unique())
    optimizers = sort_optimizers(summary["optimizer"])
    measures = [m for m in OVERHEAD_MEASURES if m in set(summary["measure"])]
    with styled():
        panel_width = max(5.0, 1.2 + 0.4 * len(models) * len(optimizers))
        fig, axes = new_figure(1, len(measures), panel_width * len(measures), 4.8)
        width = 0.8 / max(1, len(optimizers))
        for ax, measure in zip(axes, measures, strict=True):
            sub = summary[summary["measure"] == measure]
            for j, optimizer in enumerate(optimizers):
                xs, ys, labels = [], [], []
                for i, model in enumerate(models):
                    row = sub[(sub["model"] == model) & (sub["optimizer"] == optimizer)]
                    if len(row) and np.isfinite(row["ratio"].iloc[0]):
                        xs.append(i - 0.4 + width * (j + 0.5))
                        ys.append(row["ratio"].iloc[0])
                        labels.append(f"{row['ratio'].iloc[0]:.2f}×")
                bars = ax.bar(xs, ys, width=width * 0.92, color=optimizer_color(optimizer), label=optimizer)
                ax.bar_label(bars, labels=labels, fontsize=7, padding=2, rotation=90)
            ax.axhline(1.0, color="0.3", linestyle="--", linewidth=1)
            ax.set_yscale("log")
            finite = sub["ratio"].to_numpy(dtype=float)
            finite = finite[np.isfinite(finite) & (finite > 0)]
            low = min(0.5, float(finite.min()) * 0.7) if len(finite) else 0.5
            high = max(2.0, float(finite.max()) * 2.5) if len(finite) else 2.0
            ax.set_ylim(low, high)
            plain_log_ticks(ax.yaxis, "×")
            ax.grid(axis="x", visible=False)
            ax.set_xticks(range(len(models)), models)
            ax.set_xlabel("model")
            ax.set_ylabel(f"median seconds per {measure} / {reference} (log)")
            what = "optimizer step only" if measure == "step" else "forward + backward + step"
            ax.set_title(f"per {measure} ({what})")
        axes[0].legend(loc="upper left", ncols=min(len(optimizers), 3), frameon=False)
        fig.suptitle(f"Optimizer overhead relative to {reference} (median over repeats; labels: ratio)")
    return fig
