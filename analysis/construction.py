"""Construction and first-step time by the number of parameter tensors (``results/construction/construction.csv``,
written by ``python -m experiments.bench.construction``): whether building the optimizer stays linear."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from analysis.load import read_checked_csv
from analysis.style import new_figure, plain_log_ticks, styled
from analysis.tables import fmt, markdown_table
from experiments.bench.schema import CONSTRUCTION_COLUMNS as COLUMNS

OPTIMIZER_TEXT = {"sgd": "torch SGD", "adam": "torch Adam", "mlbfgs-model": 'MLBFGS blocks="model"',
                  "mlbfgs-layer": 'MLBFGS blocks="layer"'}


def load_construction(results: Path | str) -> pd.DataFrame | None:
    """The benchmark's rows, or None when the file is absent."""
    path = Path(results) / "construction" / "construction.csv"
    if not path.is_file():
        return None
    return read_checked_csv(path, COLUMNS, ("tensors", "repeat", "construct_seconds", "step_seconds"))


def construction_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per (optimizer, tensors), and each one's growth from the fewest tensors measured:
    the ratio of medians divided by the ratio of tensor counts (1 = linear)."""
    med = frame.groupby(["optimizer", "tensors"], sort=False)[["construct_seconds", "step_seconds"]].median()
    med = med.reset_index()
    fewest = med.loc[med.groupby("optimizer", sort=False)["tensors"].idxmin()].set_index("optimizer")
    base = fewest.reindex(med["optimizer"])
    scale = med["tensors"].to_numpy() / base["tensors"].to_numpy()
    med["construct_growth"] = med["construct_seconds"].to_numpy() / base["construct_seconds"].to_numpy() / scale
    med["step_growth"] = med["step_seconds"].to_numpy() / base["step_seconds"].to_numpy() / scale
    order = {name: i for i, name in enumerate(OPTIMIZER_TEXT)}
    med["_o"] = med["optimizer"].map(order).fillna(len(order))
    return med.sort_values(["_o", "tensors"], kind="stable").drop(columns="_o").reset_index(drop=True)


def construction_markdown(summary: pd.DataFrame) -> str:
    fewest = int(summary["tensors"].min())
    caption = (
        "Median milliseconds to build the optimizer and to take its first step (which builds the step's "
        "buffers), by the number of parameter tensors (8 x 8 matrices and 8-element biases, alternating), "
        "repeats interleaved in one process. 'per tensor vs " + str(fewest) + "' = the time's growth divided by the "
        "tensor count's growth from " + str(fewest) + " tensors: 1 is linear, above 1 superlinear.\n"
    )
    header = ["optimizer", "tensors", "construct ms", "per tensor vs " + str(fewest), "first step ms",
              "per tensor vs " + str(fewest) + " "]
    body = [[OPTIMIZER_TEXT.get(r.optimizer, r.optimizer), str(int(r.tensors)), fmt(r.construct_seconds * 1e3, 2),
             fmt(r.construct_growth, 2), fmt(r.step_seconds * 1e3, 2), fmt(r.step_growth, 2)]
            for r in summary.itertuples()]
    return caption + "\n" + markdown_table(header, body, "lrrrrr")


def plot_construction(frame: pd.DataFrame, summary: pd.DataFrame) -> Figure:
    """Construction (left) and first step (right) against the tensor count, log-log; dotted: linear
    growth from the fewest tensors of each optimizer."""
    del frame
    with styled():
        fig, axes = new_figure(1, 2, 10.0, 3.8)
        for ax, column, title in ((axes[0], "construct_seconds", "construction"),
                                  (axes[1], "step_seconds", "first step")):
            for name, sub in summary.groupby("optimizer", sort=False):
                sub = sub.sort_values("tensors")
                n, ms = sub["tensors"].to_numpy(dtype=float), sub[column].to_numpy(dtype=float) * 1e3
                (line,) = ax.plot(n, ms, "o-", label=OPTIMIZER_TEXT.get(str(name), str(name)))
                ax.plot(n, ms[0] * n / n[0], ":", color=line.get_color(), alpha=0.6)
            ax.set_xscale("log")
            ax.set_yscale("log")
            counts = sorted(int(n) for n in summary["tensors"].unique())
            ax.set_xticks(counts, labels=[str(n) for n in counts])  # the measured counts, not 1-2-5 steps
            ax.xaxis.set_minor_locator(NullLocator())
            plain_log_ticks(ax.yaxis, " ms")
            ax.set_xlabel("parameter tensors")
            ax.set_title(title)
        axes[0].legend(fontsize=8)
    return fig
