"""Compute spent by a results tree's runs: CPU-hours and CPU milliseconds per iteration.

Reads the run manifests (``<run id>.json`` beside each run CSV, :func:`analysis.load.load_manifests`) under
``<root>/runs/<workload>/`` (stage ``final``) and ``<root>/tuning/runs/<workload>/`` (stage ``trial``, the
tuning trials of a preset such as ``long``).
A manifest's ``cpu_s`` is the process CPU time of the run's own training iterations (batch, forward,
backward, step; evaluation excluded: ``experiments/runner/training.py``) and ``iterations_done`` the
iterations it has trained; an unfinished run's manifest holds them as of its last checkpoint.
Manifests without ``cpu_s`` (runs older than the column) are left out.

The table gives, per workload, stage and optimizer, the runs (and how many finished), their
iterations, CPU-hours and CPU milliseconds per iteration (total CPU over total iterations), with a
total per workload and stage and one for the tree: the measured side of a preset's CPU budget.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import Results, load_manifests
from analysis.style import sort_optimizers
from analysis.tables import fmt, markdown_table

ALL = "all"


def load_compute(data: Results) -> pd.DataFrame | None:
    """One row per run manifest with ``cpu_s``: workload, stage, optimizer, run_id, finished, iterations,
    cpu_s. Finals are ``data.manifests`` (``<root>/runs``), trials the manifests under ``<root>/tuning``
    (both read by :func:`analysis.load.load_manifests`). None when there is none."""
    frames = []
    for stage, manifests in (("final", data.manifests), ("trial", load_manifests(data.root / "tuning"))):
        if manifests is None:
            continue
        part = manifests[manifests["cpu_s"].notna()]
        frames.append(pd.DataFrame({
            "workload": part["workload"].astype(str), "stage": stage, "optimizer": part["optimizer"].astype(str),
            "run_id": part["run_id"], "finished": part["status"] == "finished",
            "iterations": part["iterations_done"].fillna(0).astype(int), "cpu_s": part["cpu_s"]}))
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def _summary_row(workload: str, stage: str, optimizer: str, sub: pd.DataFrame) -> dict[str, object]:
    iterations, cpu = int(sub["iterations"].sum()), float(sub["cpu_s"].sum())
    return {"workload": workload, "stage": stage, "optimizer": optimizer, "runs": len(sub),
            "finished": int(sub["finished"].sum()), "iterations": iterations, "cpu_hours": cpu / 3600,
            "cpu_ms_per_iteration": 1000 * cpu / iterations if iterations else np.nan}


def compute_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, stage, optimizer), then a ``all`` row per (workload, stage) and one for the tree."""
    rows = []
    for (workload, stage), part in runs.groupby(["workload", "stage"], sort=True):
        for optimizer in sort_optimizers(part["optimizer"]):
            rows.append(_summary_row(workload, stage, optimizer, part[part["optimizer"] == optimizer]))
        rows.append(_summary_row(workload, stage, ALL, part))
    rows.append(_summary_row(ALL, ALL, ALL, runs))
    return pd.DataFrame(rows)


def compute_markdown(summary: pd.DataFrame) -> str:
    caption = ("Compute spent: the process CPU time of the runs' training iterations (the manifests' cpu_s; "
               "evaluation excluded), per workload, stage (tuning trial or final) and optimizer. An unfinished "
               "run counts up to its last checkpoint.\n")
    header = ["workload", "stage", "optimizer", "runs", "finished", "iterations", "CPU-hours", "CPU ms / iteration"]
    body = [[r.workload, r.stage, r.optimizer, str(r.runs), str(r.finished), f"{r.iterations:,}",
             fmt(r.cpu_hours, 2), fmt(r.cpu_ms_per_iteration, 1)] for r in summary.itertuples()]
    return caption + "\n" + markdown_table(header, body, "lllrrrrr")
