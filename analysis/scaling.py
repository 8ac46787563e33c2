"""Distributed scaling of the block-wise curvature state (``results/distributed/*.csv``).

Schema (DEVELOPERS.md, "results CSVs"): ``model, world_size, rank, blocks, curvature_bytes,
direction_seconds``, one row per model, world size and rank (repeated rows are reduced by their
median). The paper's claim: spreading the blocks over N workers divides the per-worker curvature
memory and direction compute by N. The ideal is ``value at the smallest world size N0 x N0 / N``
(for memory: the total over the ranks at N0, divided by N).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

from analysis.style import new_figure, optimizer_color, plain_log_ticks, styled
from analysis.tables import fmt, markdown_table

MIB = 2.0**20

#: Columns of :func:`scaling_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "world_size",
    "ranks",
    "blocks",
    "max_curvature_bytes",
    "mean_curvature_bytes",
    "total_curvature_bytes",
    "ideal_curvature_bytes",
    "memory_efficiency",
    "max_direction_seconds",
    "ideal_direction_seconds",
)


def scaling_summary(distributed: pd.DataFrame) -> pd.DataFrame:
    """Per model and world size: ranks reporting, blocks (sum over ranks), per-rank curvature bytes
    (max, mean), their total, the ideal per-rank bytes (total at the smallest world size / N),
    memory efficiency (ideal / max), slowest rank's direction seconds and its ideal (value at the
    smallest world size N0 x N0 / N). Sorted by model and world size."""
    per_rank = (
        distributed.groupby(["model", "world_size", "rank"], sort=True)[
            ["blocks", "curvature_bytes", "direction_seconds"]
        ]
        .median()
        .reset_index()
    )
    rows = []
    for model, sub in per_rank.groupby("model", sort=True):
        by_n = sub.groupby("world_size", sort=True)
        n0 = float(min(by_n.groups))
        base_total = float(by_n.get_group(min(by_n.groups))["curvature_bytes"].sum())
        base_dir = float(by_n.get_group(min(by_n.groups))["direction_seconds"].max())
        for n, group in by_n:
            ideal = base_total / float(n)
            max_bytes = float(group["curvature_bytes"].max())
            rows.append(
                {
                    "model": model,
                    "world_size": int(n),
                    "ranks": int(group["rank"].nunique()),
                    "blocks": int(group["blocks"].sum()),
                    "max_curvature_bytes": max_bytes,
                    "mean_curvature_bytes": float(group["curvature_bytes"].mean()),
                    "total_curvature_bytes": float(group["curvature_bytes"].sum()),
                    "ideal_curvature_bytes": ideal,
                    "memory_efficiency": ideal / max_bytes if max_bytes > 0 else np.nan,
                    "max_direction_seconds": float(group["direction_seconds"].max()),
                    "ideal_direction_seconds": base_dir * n0 / float(n),
                }
            )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def scaling_markdown(summary: pd.DataFrame) -> str:
    """Markdown table of :func:`scaling_summary` (MiB and milliseconds)."""
    caption = (
        "Per-rank curvature state of mlbfgs (pairs, EMAs, anchors) and direction time per step against "
        "the number of workers; 'ideal' = value at the smallest world size scaled by 1/N; "
        "efficiency = ideal / largest rank.\n"
    )
    header = [
        "model",
        "world size",
        "blocks",
        "max per-rank MiB",
        "mean per-rank MiB",
        "ideal MiB",
        "memory efficiency",
        "slowest rank direction (ms)",
        "ideal (ms)",
    ]
    body = [
        [
            r["model"],
            str(int(r["world_size"])),
            str(int(r["blocks"])),
            fmt(r["max_curvature_bytes"] / MIB, 3),
            fmt(r["mean_curvature_bytes"] / MIB, 3),
            fmt(r["ideal_curvature_bytes"] / MIB, 3),
            fmt(r["memory_efficiency"], 3),
            fmt(r["max_direction_seconds"] * 1e3, 3),
            fmt(r["ideal_direction_seconds"] * 1e3, 3),
        ]
        for _, r in summary.iterrows()
    ]
    return caption + "\n" + markdown_table(header, body)


def plot_scaling(distributed: pd.DataFrame) -> Figure:
    """Two log-log panels against world size, one line per model: per-rank curvature memory (largest
    rank solid, mean dotted, every rank as dots) and the slowest rank's direction seconds, each with
    its 1/N ideal (dashed)."""
    summary = scaling_summary(distributed)
    per_rank = (
        distributed.groupby(["model", "world_size", "rank"], sort=True)[["curvature_bytes"]].median().reset_index()
    )
    models = sorted(summary["model"].unique())
    palette = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    with styled():
        fig, (ax_mem, ax_dir) = new_figure(1, 2, 11.5, 4.8)
        for i, model in enumerate(models):
            color = palette[i % len(palette)] if len(models) > 1 else optimizer_color("mlbfgs")
            s = summary[summary["model"] == model]
            n = s["world_size"].to_numpy(dtype=float)
            pts = per_rank[per_rank["model"] == model]
            ax_mem.scatter(pts["world_size"], pts["curvature_bytes"] / MIB, s=14, color=color, alpha=0.5, zorder=3)
            ax_mem.plot(n, s["max_curvature_bytes"] / MIB, "o-", color=color, label=f"{model}: largest rank", zorder=4)
            ax_mem.plot(
                n, s["mean_curvature_bytes"] / MIB, "s:", color=color, markersize=4, label=f"{model}: mean over ranks"
            )
            ax_mem.plot(n, s["ideal_curvature_bytes"] / MIB, "--", color="0.4", label=f"{model}: ideal 1/N")
            ax_dir.plot(n, s["max_direction_seconds"] * 1e3, "o-", color=color, label=f"{model}: slowest rank")
            ax_dir.plot(n, s["ideal_direction_seconds"] * 1e3, "--", color="0.4", label=f"{model}: ideal 1/N")
        sizes = sorted(summary["world_size"].unique())
        for ax in (ax_mem, ax_dir):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.xaxis.set_major_locator(FixedLocator(sizes))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_major_formatter(ScalarFormatter())
            plain_log_ticks(ax.yaxis)
            ax.set_xlabel("world size N (workers)")
            ax.legend(frameon=False, fontsize=8)
        ax_mem.set_ylabel("curvature state per rank (MiB)")
        ax_mem.set_title("curvature memory per rank (dots: every rank)")
        ax_dir.set_ylabel("direction time per step (ms)")
        ax_dir.set_title("direction computation, slowest rank")
        fig.suptitle("Block-wise distribution of mlbfgs: per-rank cost vs number of workers")
    return fig
