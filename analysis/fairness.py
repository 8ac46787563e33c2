"""Fairness of the training clock: seconds per iteration relative to sgd, idle vs loaded machine.

Reads ``<results>/fairness/<mode>-<condition>/runs/<workload>/<run_id>.csv`` (written by
``python -m experiments.bench.fairness``): the same comparison trained in ``lockstep`` or ``separate``
mode, on an ``idle`` machine and beside busy processes (``loaded``). Per run, seconds per iteration =
``wall_s`` of the last train row / its iteration (training clock, evaluation excluded; ``cpu_s`` the
same for process CPU seconds). The ratio of an optimizer is its seconds per iteration divided by
sgd's in the same (mode, condition, workload, seed). A fair clock gives the same ratio under both
conditions: ``disagreement = ratio_loaded / ratio_idle - 1``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.load import RUN_COLUMNS, RUN_NUMERIC, SchemaError, read_checked_csv
from analysis.style import new_figure, sort_optimizers, styled
from analysis.tables import fmt, markdown_table

REFERENCE = "sgd"
MODES: tuple[str, ...] = ("lockstep", "separate")
CONDITIONS: tuple[str, ...] = ("idle", "loaded")

#: Columns of :func:`load_fairness` (one row per run).
RUN_SUMMARY_COLUMNS: tuple[str, ...] = (
    "mode", "condition", "workload", "optimizer", "seed", "iterations", "train_s", "cpu_s", "s_per_iter",
    "cpu_per_iter", "ratio",
)
#: Columns of :func:`fairness_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "mode", "workload", "optimizer", "s_per_iter_idle", "s_per_iter_loaded", "ratio_idle", "ratio_loaded",
    "disagreement",
)


def _folder_key(folder: Path) -> tuple[str, str] | None:
    mode, sep, condition = folder.name.partition("-")
    if not sep or mode not in MODES or condition not in CONDITIONS:
        return None
    return mode, condition


def load_fairness(results: Path | str) -> pd.DataFrame | None:
    """One row per run of ``<results>/fairness/<mode>-<condition>/runs`` (see :data:`RUN_SUMMARY_COLUMNS`),
    None when there is no such folder. Folders named otherwise are ignored; a run CSV without a train
    row raises :class:`SchemaError`."""
    root = Path(results) / "fairness"
    if not root.is_dir():
        return None
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        key = _folder_key(folder)
        if key is None:
            continue
        for path in sorted((folder / "runs").glob("*/*.csv")):
            if path.name.endswith(".curvature.csv"):
                continue
            df = read_checked_csv(path, RUN_COLUMNS, RUN_NUMERIC)
            train = df[df["kind"] == "train"]
            if train.empty:
                raise SchemaError(f"{path}: no train rows")
            last = train.iloc[-1]
            cpu = float(pd.to_numeric(pd.Series([last.get("cpu_s", np.nan)]), errors="coerce").iloc[0])
            rows.append({"mode": key[0], "condition": key[1], "workload": str(last["workload"]),
                         "optimizer": str(last["optimizer"]), "seed": int(last["seed"]),
                         "iterations": int(last["iteration"]), "train_s": float(last["wall_s"]), "cpu_s": cpu})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    frame["s_per_iter"] = frame["train_s"] / frame["iterations"]
    frame["cpu_per_iter"] = frame["cpu_s"] / frame["iterations"]
    keys = ["mode", "condition", "workload", "seed"]
    ref = frame[frame["optimizer"] == REFERENCE].set_index(keys)["s_per_iter"]
    frame["ratio"] = frame["s_per_iter"].to_numpy() / ref.reindex(pd.MultiIndex.from_frame(frame[keys])).to_numpy()
    frame = frame.sort_values(["mode", "condition", "workload", "optimizer", "seed"], kind="stable")
    return frame[list(RUN_SUMMARY_COLUMNS)].reset_index(drop=True)


def fairness_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (mode, workload, optimizer): median over seeds of seconds per iteration and of the ratio to
    sgd under each condition, and their disagreement (NaN where a condition is missing)."""
    med = runs.groupby(["mode", "condition", "workload", "optimizer"])[["s_per_iter", "ratio"]].median()
    wide = med.unstack("condition")
    out = pd.DataFrame(index=wide.index)
    for cond in CONDITIONS:
        out[f"s_per_iter_{cond}"] = wide["s_per_iter"][cond] if cond in wide["s_per_iter"] else np.nan
        out[f"ratio_{cond}"] = wide["ratio"][cond] if cond in wide["ratio"] else np.nan
    out["disagreement"] = out["ratio_loaded"] / out["ratio_idle"] - 1.0
    out = out.reset_index()
    order = {name: i for i, name in enumerate(sort_optimizers(out["optimizer"]))}
    out["_o"] = out["optimizer"].map(order)
    out = out.sort_values(["workload", "_o", "mode"], kind="stable").drop(columns="_o")
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def fairness_markdown(summary: pd.DataFrame, tolerance: float = 0.10) -> str:
    """Markdown table: per workload and optimizer, the ratio to sgd idle / loaded and the disagreement
    for each mode; a closing line counts the lockstep ratios within ``tolerance``."""
    caption = (
        f"Seconds per training iteration (evaluation excluded) divided by {REFERENCE}'s, the same comparison "
        "trained on an idle machine and beside two busy processes; 'lockstep': all optimizers of a "
        "(workload, seed) in one process, an iteration each in turn; 'separate': one process per run, one "
        "after another. Disagreement = loaded ratio / idle ratio - 1; a fair clock gives 0. Loaded slowdown: "
        f"{REFERENCE}'s seconds per iteration loaded / idle.\n"
    )
    header = ["workload", "optimizer"]
    for mode in MODES:
        header += [f"{mode} idle", f"{mode} loaded", f"{mode} disagreement"]
    body = []
    for workload in sorted(summary["workload"].unique()):
        sub = summary[summary["workload"] == workload]
        for optimizer in sort_optimizers(sub["optimizer"]):
            cells = [workload, optimizer]
            for mode in MODES:
                row = sub[(sub["optimizer"] == optimizer) & (sub["mode"] == mode)]
                if row.empty:
                    cells += ["n/a"] * 3
                    continue
                r = row.iloc[0]
                pct = r["disagreement"] * 100
                cells += [fmt(r["ratio_idle"], 3), fmt(r["ratio_loaded"], 3),
                          ("+" if pct > 0 else "") + fmt(pct, 1) + " %" if np.isfinite(pct) else "n/a"]
            body.append(cells)
    lines = []
    for mode in MODES:
        sub = summary[(summary["mode"] == mode) & (summary["optimizer"] != REFERENCE)]["disagreement"].dropna()
        if len(sub):
            within = int((sub.abs() <= tolerance).sum())
            lines.append(f"{mode}: {within}/{len(sub)} ratios within {tolerance:.0%} between idle and loaded, "
                         f"largest disagreement {fmt(sub.abs().max() * 100, 1)} %.")
        ref = summary[(summary["mode"] == mode) & (summary["optimizer"] == REFERENCE)]
        if len(ref):
            slow = ref["s_per_iter_loaded"] / ref["s_per_iter_idle"]
            lines.append(f"{mode}: loaded slowdown of {REFERENCE} "
                         + ", ".join(f"{w} {fmt(s, 2)}x" for w, s in zip(ref["workload"], slow, strict=True)) + ".")
    return caption + "\n" + markdown_table(header, body) + "\n" + "\n".join(lines) + "\n"


def plot_fairness(summary: pd.DataFrame) -> Figure:
    """One panel per workload: per optimizer (sgd left out: its ratio is 1) four bars, the ratio to sgd
    in lockstep / separate mode on an idle / loaded machine; equal heights within a mode = a fair clock."""
    workloads = sorted(summary["workload"].unique())
    colors = {("lockstep", "idle"): "#1f77b4", ("lockstep", "loaded"): "#aec7e8",
              ("separate", "idle"): "#d62728", ("separate", "loaded"): "#ff9896"}
    with styled():
        fig, axes = new_figure(1, len(workloads), 5.2 * len(workloads), 4.4)
        for ax, workload in zip(axes, workloads, strict=True):
            sub = summary[(summary["workload"] == workload) & (summary["optimizer"] != REFERENCE)]
            optimizers = sort_optimizers(sub["optimizer"])
            width = 0.2
            for k, (key, color) in enumerate(colors.items()):
                mode, cond = key
                vals = []
                for optimizer in optimizers:
                    row = sub[(sub["optimizer"] == optimizer) & (sub["mode"] == mode)]
                    vals.append(row[f"ratio_{cond}"].iloc[0] if len(row) else np.nan)
                xs = np.arange(len(optimizers)) + (k - 1.5) * width
                ax.bar(xs, vals, width, color=color, edgecolor="#333333", linewidth=0.5,
                       hatch="//" if mode == "separate" else None, label=f"{mode}, {cond}")
            ax.axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
            ax.set_xticks(np.arange(len(optimizers)), optimizers)
            ax.set_title(workload)
            ax.set_ylabel(f"seconds per iteration / {REFERENCE}'s")
        axes[0].legend(fontsize=8, loc="upper left")
        fig.suptitle("Is the clock fair? Ratio to sgd on an idle and a loaded machine")
    return fig
