"""Cost of the runner against a bare PyTorch loop, and a run's start-up (``results/runner/*.csv``,
written by ``python -m experiments.bench.runner``).

Per (workload, optimizer): the median seconds per iteration of each contestant over interleaved
repeats, and its overhead against ``bare``: the median over repeats of the paired ratio (contestant /
bare in the same repeat) minus 1, so that drifts of the machine between repeats cancel. Start-up: the median seconds
of each stage per workload.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.load import read_checked_csv
from analysis.style import optimizer_sort_key
from analysis.tables import fmt, markdown_table
from experiments.bench.schema import RUNNER_COLUMNS as RUN_COLUMNS
from experiments.bench.schema import STARTUP_COLUMNS

CONTESTANTS: tuple[str, ...] = ("bare", "runner", "runner_total", "lockstep")
STAGES: tuple[str, ...] = ("imports", "data", "run setup")


def load_runner(results: Path | str) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """(iteration rows, start-up rows); each None when its file is absent."""
    root = Path(results) / "runner"
    runs = startup = None
    if (root / "runner.csv").is_file():
        runs = read_checked_csv(root / "runner.csv", RUN_COLUMNS, ("repeat", "seconds"))
    if (root / "startup.csv").is_file():
        startup = read_checked_csv(root / "startup.csv", STARTUP_COLUMNS, ("repeat", "seconds"))
    return runs, startup


def runner_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Median seconds per iteration per (workload, optimizer, contestant) and the overhead vs bare."""
    med = runs.groupby(["workload", "optimizer", "contestant"])["seconds"].agg(
        repeats="count", median_s="median").reset_index()
    bare = runs[runs["contestant"] == "bare"].set_index(["workload", "optimizer", "repeat"])["seconds"]
    paired = runs.assign(ratio=runs["seconds"].to_numpy() / bare.reindex(
        pd.MultiIndex.from_frame(runs[["workload", "optimizer", "repeat"]])).to_numpy())
    ratio = paired.groupby(["workload", "optimizer", "contestant"])["ratio"].median()
    keys = pd.MultiIndex.from_frame(med[["workload", "optimizer", "contestant"]])
    med["overhead"] = ratio.reindex(keys).to_numpy() - 1.0
    med["_c"] = med["contestant"].map({c: i for i, c in enumerate(CONTESTANTS)}).fillna(len(CONTESTANTS))
    med["_o"] = med["optimizer"].map(optimizer_sort_key)
    med = med.sort_values(["workload", "_o", "_c"], kind="stable").drop(columns=["_c", "_o"])
    med["repeats"] = med["repeats"].astype(int)
    return med.reset_index(drop=True)


def runner_markdown(summary: pd.DataFrame, startup: pd.DataFrame | None) -> str:
    caption = (
        "Median milliseconds per training iteration over interleaved repeats; 'bare': a hand-written loop "
        "(index the tensors, forward, backward, the torch optimizer's step); 'runner': the runner's "
        "iteration as its own clock logs it (wall_s); 'runner_total': the same timed from outside, with the "
        "CSV row and the checkpoints it writes; 'lockstep': plus swapping the RNG streams between runs. "
        "Overhead = median over repeats of (contestant / bare in the same repeat) - 1.\n"
    )
    header = ["workload", "optimizer", *(f"{c} (ms)" for c in CONTESTANTS), "runner overhead",
              "runner_total overhead", "lockstep overhead"]
    body = []
    for (workload, optimizer), sub in summary.groupby(["workload", "optimizer"], sort=False):
        get = sub.set_index("contestant")
        cells = [workload, optimizer]
        cells += [fmt(get["median_s"].get(c, float("nan")) * 1e3, 3) for c in CONTESTANTS]
        for c in CONTESTANTS[1:]:
            value = get["overhead"].get(c, float("nan")) * 100
            cells.append(fmt(value, 1) + " %" if pd.notna(value) else "n/a")
        body.append(cells)
    text = caption + "\n" + markdown_table(header, body)
    if startup is not None:
        med = startup.groupby(["workload", "stage"])["seconds"].median()
        rows = [[w, *(fmt(med.get((w, s), float("nan")), 2) for s in STAGES)]
                for w in sorted(startup["workload"].unique())]
        text += ("\nStart-up of a run, median seconds: 'imports' = a fresh `python -c \"import experiments.run\"`, "
                 "'data' = loading the data into memory, 'run setup' = model, optimizer, files and the "
                 "evaluation at iteration 0.\n\n" + markdown_table(["workload", *STAGES], rows))
    return text
