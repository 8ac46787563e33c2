"""Seconds per iteration by torch thread count, idle and beside other work (``results/threads/threads.csv``,
written by ``python -m experiments.bench.threads``): the evidence behind the runner's default thread count."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.load import read_checked_csv
from analysis.tables import fmt, markdown_table
from experiments.bench.schema import THREADS_COLUMNS as COLUMNS

CONDITION_ORDER: tuple[str, ...] = ("idle", "spin", "torch")
CONDITION_TEXT = {"idle": "idle", "spin": "2 busy Python processes", "torch": "another 2-thread torch job"}


def load_threads(results: Path | str) -> pd.DataFrame | None:
    """The thread benchmark's rows, or None when the file is absent."""
    path = Path(results) / "threads" / "threads.csv"
    if not path.is_file():
        return None
    return read_checked_csv(path, COLUMNS, ("threads", "repeat", "seconds", "cpu_seconds"))


def threads_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per iteration per (workload, condition, threads) and the ratio to 1 thread."""
    med = frame.groupby(["workload", "condition", "threads"], sort=True)["seconds"].median().reset_index()
    one = med[med["threads"] == 1].set_index(["workload", "condition"])["seconds"]
    keys = pd.MultiIndex.from_frame(med[["workload", "condition"]])
    med["ratio_to_1_thread"] = med["seconds"].to_numpy() / one.reindex(keys).to_numpy()
    med["_c"] = med["condition"].map({c: i for i, c in enumerate(CONDITION_ORDER)}).fillna(len(CONDITION_ORDER))
    med = med.sort_values(["workload", "_c", "threads"], kind="stable").drop(columns="_c")
    return med.rename(columns={"seconds": "median_s"}).reset_index(drop=True)


def threads_markdown(summary: pd.DataFrame) -> str:
    caption = (
        "Median milliseconds per training iteration (SGD, batch 128) by torch thread count, interleaved "
        "repeats, on the machine idle and beside other work; '/ 1 thread' = ratio to one thread under the "
        "same condition (above 1 = slower).\n"
    )
    header = ["workload", "condition", "threads", "ms / iteration", "/ 1 thread"]
    body = [[r.workload, CONDITION_TEXT.get(r.condition, r.condition), str(int(r.threads)), fmt(r.median_s * 1e3, 2),
             fmt(r.ratio_to_1_thread, 2)] for r in summary.itertuples()]
    return caption + "\n" + markdown_table(header, body, "llrrr")
