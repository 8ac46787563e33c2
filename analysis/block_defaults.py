"""The block default of mL-BFGS, chosen by a rule fixed before the deciding runs were read.

Runs: ``<results>/block_defaults/runs`` (``python -m experiments.suite --preset block_defaults``) and, for the
ResNet partitions with the global rescaling, ``<results>/resnet_diagnosis/runs``. Each run is mL-BFGS at its
workload's tuned setting (lr, update period, beta: the block_defaults preset's) with one candidate of
:data:`CANDIDATES`; a diagnosis run at another setting (the runner-up's) is not a candidate.

**The rule** (stated 2026-12-08, before the fmnist-cnn finals of the block_defaults preset were read):

1. On each workload, a candidate is *starving* when some block gets less than :data:`STARVATION_RATIO` of its
   share of the gradient: the median over pair steps (seeds pooled) of ``direction_share_b / (|g_b|^2/|g|^2)``,
   the smallest over blocks. A default must not starve a layer on a convnet (one block never does).
2. On each workload, a candidate is *worse* when the 95% interval of its mean final test accuracy minus the
   best candidate's mean (:func:`analysis.intervals.difference_interval`) lies below zero.
3. The default is the first candidate of :data:`CANDIDATES` (simplest first) that is neither starving nor
   worse on any workload of :data:`WORKLOADS`, each with at least :data:`MIN_SEEDS` seeds. Extra structure
   (more blocks, a per-block scale) has to earn its place by a difference whose interval excludes zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.diagnosis import load_diagnosis
from analysis.intervals import difference_interval, mean_interval, verdict
from analysis.style import new_figure, styled
from analysis.tables import fmt, markdown_table

FOLDERS = ("block_defaults", "resnet_diagnosis")  # the first holding a (workload, candidate, seed) wins
WORKLOADS = ("mnist1d-mlp", "fmnist-cnn", "fmnist-resnet")
#: (name, blocks, direction_norm), simplest first: one block; the authors' two; one per layer scaled per
#: block to its gradient's norm; one per layer.
CANDIDATES: tuple[tuple[str, str, str], ...] = (
    ("model", "model", "global"),
    ("authors", "authors", "global"),
    ("layer, direction_norm block", "layer", "block"),
    ("layer", "layer", "global"),
)
STARVATION_RATIO = 0.1
MIN_SEEDS = 3
SETTING_KEYS = ("lr", "update_period", "beta")


def _candidate(config: dict) -> str | None:
    key = (str(config.get("blocks", "model")), str(config.get("direction_norm", "global")))
    return next((name for name, blocks, norm in CANDIDATES if (blocks, norm) == key), None)


def load_block_defaults(root: Path | str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(runs, pairs) of the candidates at each workload's tuned setting, with a ``candidate`` column; None
    without a finished block_defaults run."""
    frames_runs, frames_pairs = [], []
    settings: dict[str, str] = {}
    for folder in FOLDERS:
        data = load_diagnosis(root, folder)
        if data is None:
            if folder == FOLDERS[0]:
                return None
            continue
        runs, pairs = data
        runs = runs[runs["optimizer"] == "mlbfgs"].copy()
        configs = runs["config"].map(json.loads)
        runs["candidate"] = configs.map(_candidate)
        runs["setting"] = configs.map(lambda c: json.dumps({k: c.get(k) for k in SETTING_KEYS}, sort_keys=True))
        if folder == FOLDERS[0]:  # the tuned setting of each workload is the block_defaults preset's
            settings = runs.groupby("workload")["setting"].first().to_dict()
        runs = runs[runs["candidate"].notna() & (runs["setting"] == runs["workload"].map(settings))]
        frames_runs.append(runs)
        frames_pairs.append(pairs.merge(runs[["variant", "seed", "candidate", "workload"]],
                                        on=["variant", "seed", "workload"]))
    runs = pd.concat(frames_runs, ignore_index=True).drop_duplicates(["workload", "candidate", "seed"])
    pairs = pd.concat(frames_pairs, ignore_index=True)
    pairs = pairs.merge(runs[["workload", "candidate", "seed", "variant"]],
                        on=["workload", "candidate", "seed", "variant"])  # the pairs of the runs kept
    return runs.reset_index(drop=True), pairs


def _starvation(pairs: pd.DataFrame) -> float:
    """The smallest over blocks of the median over pair steps of (step share / gradient share); 1 with one block."""
    if pairs.empty or pairs["block"].nunique() < 2:
        return 1.0
    g2 = pairs.groupby(["seed", "iteration"])["grad_norm"].transform(lambda v: v ** 2 / (v ** 2).sum())
    ratio = pairs["direction_share"] / g2.where(g2 > 0)
    return float(ratio.groupby(pairs["block"]).median().min())


def block_defaults_summary(data: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    """One row per (workload, candidate): seeds, final test accuracy [95%], the difference to the workload's
    best candidate [95%] with its verdict, the starvation ratio, and whether the rule admits it there."""
    runs, pairs = data
    rows = []
    for workload, sub in runs.groupby("workload", sort=False):
        means = sub.groupby("candidate")["final_test_acc"].mean()
        best = str(means.idxmax())
        best_acc = sub[sub["candidate"] == best]["final_test_acc"].tolist()
        for name, _, _ in CANDIDATES:
            mine = sub[sub["candidate"] == name]
            if mine.empty:
                continue
            acc = mean_interval(mine["final_test_acc"].tolist())
            diff = difference_interval(mine["final_test_acc"].tolist(), best_acc)
            word = "best" if name == best else verdict(diff)
            ratio = _starvation(pairs[(pairs["workload"] == workload) & (pairs["candidate"] == name)]
                                if len(pairs) else pairs)
            seeds = int(mine["seed"].nunique())
            rows.append({"workload": workload, "candidate": name, "seeds": seeds,
                         "final_test_acc": acc.value, "final_test_acc_low": acc.low, "final_test_acc_high": acc.high,
                         "delta_vs_best": diff.value, "delta_low": diff.low, "delta_high": diff.high,
                         "verdict": word, "starvation_ratio": ratio,
                         "admitted": bool(word != "worse" and ratio >= STARVATION_RATIO and seeds >= MIN_SEEDS)})
    out = pd.DataFrame(rows)
    order = {w: i for i, w in enumerate(WORKLOADS)}
    rank = {name: i for i, (name, _, _) in enumerate(CANDIDATES)}
    out = out.sort_values(["workload", "candidate"], key=lambda c: c.map(order if c.name == "workload" else rank))
    return out.reset_index(drop=True)


def chosen_default(summary: pd.DataFrame) -> str | None:
    """The rule's default (the module docstring), or None while some workload lacks a candidate's runs."""
    for name, _, _ in CANDIDATES:
        rows = summary[(summary["candidate"] == name) & summary["workload"].isin(WORKLOADS)]
        if not set(WORKLOADS) <= set(rows["workload"]) or (rows["seeds"] < MIN_SEEDS).any():
            return None  # the rule reads the simplest first: it cannot skip one it cannot judge yet
        if rows["admitted"].all():
            return name
    return None


def block_defaults_markdown(summary: pd.DataFrame) -> str:
    choice = chosen_default(summary)
    caption = (
        "mL-BFGS at each workload's tuned setting with each block candidate (`analysis/block_defaults.py`, "
        "whose docstring states the rule). Final test accuracy: the last evaluation, mean with its 95% interval; "
        "'vs best': the difference to the workload's best candidate with its interval, 'worse' only where it "
        f"excludes zero. 'step/gradient share': the smallest over blocks of the block's median share of the "
        f"step divided by its share of the gradient; below {STARVATION_RATIO} the candidate starves a block. "
        "The default is the simplest candidate (the table's order) admitted on every workload.\n\n"
        + (f"**Chosen default: `{choice}`.**\n" if choice else
           "**No default chosen**: a workload lacks runs or seeds, or no candidate is admitted on every workload.\n")
    )
    header = ["workload", "candidate", "seeds", "final test acc [95%]", "vs best [95%]", "",
              "step/gradient share", "admitted"]
    body = []
    for r in summary.itertuples():
        delta = "–" if r.verdict == "best" else f"{r.delta_vs_best:+.4f} [{r.delta_low:+.4f}, {r.delta_high:+.4f}]"
        body.append([r.workload, f"`{r.candidate}`", str(r.seeds),
                     f"{fmt(r.final_test_acc, 4)} [{fmt(r.final_test_acc_low, 4)}, {fmt(r.final_test_acc_high, 4)}]",
                     delta, r.verdict, fmt(r.starvation_ratio, 4), "yes" if r.admitted else "no"])
    return caption + "\n" + markdown_table(header, body, "llrrrlrl")


def plot_block_defaults(data: tuple[pd.DataFrame, pd.DataFrame], summary: pd.DataFrame) -> Figure:
    """Per workload, each candidate's mean final test accuracy with its 95% interval, seeds as dots."""
    runs, _ = data
    workloads = [w for w in WORKLOADS if w in set(summary["workload"])]
    with styled():
        fig, axes = new_figure(1, len(workloads), 4.6 * len(workloads), 2.6)
        for ax, workload in zip(axes, workloads, strict=True):
            sub = summary[summary["workload"] == workload].reset_index(drop=True)
            ys = np.arange(len(sub))[::-1]
            colors = ["#1b7837" if a else "#999999" for a in sub["admitted"]]
            for y, r, color in zip(ys, sub.itertuples(), colors, strict=True):
                err = [[r.final_test_acc - r.final_test_acc_low], [r.final_test_acc_high - r.final_test_acc]]
                ax.errorbar([r.final_test_acc], [y], xerr=err, fmt="D", color=color, ecolor=color, capsize=3,
                            markersize=5, markerfacecolor="white", zorder=3)  # the mean, open
            for y, name, color in zip(ys, sub["candidate"], colors, strict=True):
                pts = runs[(runs["workload"] == workload) & (runs["candidate"] == name)]["final_test_acc"]
                ax.plot(pts, [y] * len(pts), "o", color=color, markersize=3, alpha=0.8)
            ax.set_yticks(ys, sub["candidate"], fontsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(5))
            ax.set_xlabel("final test accuracy")
            ax.set_title(workload)
        fig.suptitle("mL-BFGS block candidates: mean (open diamond), 95% interval, seeds (dots); "
                     "green: admitted by the rule")
    return fig
