"""Time to target: iterations, gradient evaluations and training seconds each optimizer needs to first
reach a target test accuracy (or train loss), with ratios to the reference optimizer (sgd).

Rule (default): target = 0.99 x the final test accuracy of sgd (last evaluation of each run, mean over
seeds). A run reaches the target at its first evaluation with ``test_acc >= target``; an optimizer's
figures are the means over its seeds, reported only when every seed reaches the target.
For a loss target the EMA-smoothed train loss (see :mod:`analysis.curves`) must fall to
``<= target`` (default target: sgd's final smoothed loss / 0.99).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from analysis.configs import with_labels
from analysis.curves import SMOOTH_FRACTION, evals, smoothed_train
from analysis.intervals import mean_interval
from analysis.select import MAIN_BETA, main_runs
from analysis.style import optimizer_sort_key
from analysis.tables import fmt, markdown_table

NOT_REACHED = "not reached"

#: Columns of :func:`time_to_target` (and of ``time_to_target.csv``).
TABLE_COLUMNS: tuple[str, ...] = (
    "workload",
    "optimizer",
    "label",
    "metric",
    "target",
    "seeds",
    "seeds_reached",
    "iterations",
    "grad_evals",
    "seconds",
    "iterations_ratio",
    "grad_evals_ratio",
    "seconds_ratio",
    "seconds_pairs",
    "final",
    "final_std",
    "final_low",
    "final_high",
    "iterations_low",
    "iterations_high",
)

Metric = Literal["test_acc", "train_loss"]
_METRIC_NAMES: dict[str, str] = {"test_acc": "test accuracy", "train_loss": "train loss (EMA-smoothed)"}


@dataclass(frozen=True)
class TargetRule:
    """How the per-workload target is set.

    ``metric``: "test_acc" (reach ``>= target``) or "train_loss" (smoothed loss ``<= target``).
    ``value``: an absolute target; when ``None`` the target comes from the ``reference`` optimizer's
    final value (mean over seeds): times ``fraction`` for accuracy, divided by ``fraction`` for loss.
    """

    metric: Metric = "test_acc"
    value: float | None = None
    reference: str = "sgd"
    fraction: float = 0.99
    #: fixed targets per workload (e.g. from the tuning trials, :func:`targets_from_trials`); they
    #: take precedence over ``value`` and the reference, and ``per_workload_how`` states their rule
    per_workload: tuple[tuple[str, float], ...] = ()
    per_workload_how: str = ""
    #: "mean": mean over seeds, reported only when every seed reaches the target; "median": the
    #: median over seeds with a seed that never reaches it counted as infinite (AlgoPerf's rule over
    #: its studies), reported when at least half reach it
    aggregate: Literal["mean", "median"] = "mean"
    #: a sentence on when and why the rule was fixed, appended to the caption
    note: str = ""

    def __post_init__(self) -> None:
        if self.metric not in _METRIC_NAMES:
            raise ValueError(f"metric must be one of {', '.join(_METRIC_NAMES)}, got {self.metric!r}")
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must lie in (0, 1], got {self.fraction}")
        if self.aggregate not in ("mean", "median"):
            raise ValueError(f"aggregate must be one of ['mean', 'median'], got {self.aggregate!r}")

    @property
    def higher_is_better(self) -> bool:
        """True for accuracy (reach means ``>=``), False for loss (reach means ``<=``)."""
        return self.metric == "test_acc"

    def from_reference(self, final: float) -> float:
        """Target from the reference's final value."""
        return final * self.fraction if self.higher_is_better else final / self.fraction

    def fixed_for(self, workload: str) -> float | None:
        """The fixed target of ``workload``, if :attr:`per_workload` names one."""
        return dict(self.per_workload).get(workload)

    def caption(self, target: float, reference_final: float | None, reference_seeds: int,
                workload: str | None = None, reference_label: str | None = None) -> str:
        """The sentence that states the rule and the resulting target (``reference_label``: the
        reference's configuration when it is not the optimizer's only one)."""
        ref = self.reference if reference_label in (None, self.reference) else (
            f"{reference_label} (the best of {self.reference}'s configurations)")
        name = _METRIC_NAMES[self.metric]
        sign = "≥" if self.higher_is_better else "≤"
        if workload is not None and self.fixed_for(workload) is not None:
            how = self.per_workload_how or "a fixed target"
        elif self.value is not None:
            how = "a fixed target"
        else:
            op = f"{self.fraction:g} ×" if self.higher_is_better else f"1/{self.fraction:g} ×"
            how = (
                f"{op} the final {name} of {ref} "
                f"(last evaluation, mean over {reference_seeds} seed{'s' if reference_seeds != 1 else ''}: "
                f"{fmt(reference_final, 4)})"
            )
        point = "evaluation" if self.metric == "test_acc" else "iteration"
        agg = ("mean over seeds, counted only when every seed reaches it" if self.aggregate == "mean" else
               "median over seeds, a seed that never reaches it counting as infinite (AlgoPerf), so reported "
               "when at least half the seeds reach it")
        return (
            f"Target: {name} {sign} {fmt(target, 4)}, {how}. "
            f"Iterations, gradient evaluations and training seconds (evaluation excluded) until the first "
            f'{point} that reaches it; {agg}, else "{NOT_REACHED}". Columns "/ {self.reference}": ratio to '
            f"{self.reference} (below 1 = fewer than {self.reference}); the seconds ratio is the median over the "
            f"seeds whose run shared one process (one clock) with {self.reference}'s run of the same seed, their "
            f"number in brackets, and '–' where no seed did: seconds of different processes are never compared. "
            f"Last column: the {name} at the end of the runs (last evaluation"
            f"{'' if self.metric == 'test_acc' else ' or iteration'}), mean over seeds with its 95% interval "
            f"(analysis/intervals.py)." + (f" {self.note}" if self.note else "")
        )


def _metric_frame(runs: pd.DataFrame, rule: TargetRule, smooth_fraction: float) -> tuple[pd.DataFrame, str]:
    """Rows carrying the metric (eval rows, or train rows with the smoothed loss) and its column."""
    if rule.metric == "test_acc":
        return evals(runs), "test_acc"
    return smoothed_train(runs, smooth_fraction), "train_loss_smooth"


def final_values(frame: pd.DataFrame, column: str) -> pd.Series:
    """Per run: the value of ``column`` at the run's last row with a finite value (by iteration)."""
    ok = frame[np.isfinite(frame[column].to_numpy(dtype=float))]
    return ok.sort_values(["run_id", "iteration"], kind="stable").groupby("run_id")[column].last()


def first_reach(frame: pd.DataFrame, column: str, target: float, higher_is_better: bool) -> pd.DataFrame:
    """Per run: iteration, grad_evals and wall_s of the first row (by iteration) whose ``column``
    reaches ``target``; NaN for runs that never reach it. Index: run_id (every run of ``frame``)."""
    values = frame[column].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        hit = values >= target if higher_is_better else values <= target
    hits = frame[hit].sort_values(["run_id", "iteration"], kind="stable").groupby("run_id").first()
    out = pd.DataFrame(index=pd.Index(sorted(frame["run_id"].unique()), name="run_id"))
    for col in ("iteration", "grad_evals", "wall_s"):
        out[col] = hits[col].reindex(out.index) if len(hits) else np.nan
    return out


def reference_label(
    runs: pd.DataFrame, rule: TargetRule, smooth_fraction: float = SMOOTH_FRACTION
) -> str | None:
    """The configuration label (``label`` column, :func:`analysis.configs.with_labels`) of the
    reference optimizer in ``runs``: its only configuration or, when it has several (e.g. a learning-rate
    sweep in one folder), the one with the best final value of the rule's metric (mean over seeds;
    highest accuracy, lowest loss). ``None`` when it has no runs."""
    if "label" not in runs:
        return None
    mine = runs[runs["optimizer"] == rule.reference]
    labels = sorted(mine["label"].unique())
    if len(labels) <= 1:
        return str(labels[0]) if labels else None
    frame, column = _metric_frame(mine, rule, smooth_fraction)
    finals = final_values(frame, column)
    by_label = {lab: finals.reindex(mine.loc[mine["label"] == lab, "run_id"].unique()).mean() for lab in labels}
    known = {lab: v for lab, v in by_label.items() if np.isfinite(v)}
    if not known:
        return None
    pick = max if rule.higher_is_better else min
    return pick(known, key=lambda lab: (known[lab], lab) if rule.higher_is_better else (known[lab], lab))


def workload_target(
    runs: pd.DataFrame, rule: TargetRule, smooth_fraction: float = SMOOTH_FRACTION
) -> tuple[float | None, float | None, int]:
    """(target, reference final value, reference seeds) for the runs of one workload; target ``None``
    when the rule needs the reference and it has no runs."""
    frame, column = _metric_frame(runs, rule, smooth_fraction)
    ref_label = reference_label(runs, rule, smooth_fraction)
    ref = frame[frame["label"] == ref_label] if "label" in frame and ref_label is not None else frame.iloc[:0]
    finals = final_values(ref, column) if len(ref) else pd.Series(dtype=float)
    ref_final = float(finals.mean()) if len(finals) else None
    workloads = runs["workload"].dropna().unique()
    fixed = rule.fixed_for(str(workloads[0])) if len(workloads) == 1 else None
    if fixed is not None:
        return float(fixed), ref_final, len(finals)
    if rule.value is not None:
        return float(rule.value), ref_final, len(finals)
    if ref_final is None:
        return None, None, 0
    return rule.from_reference(ref_final), ref_final, len(finals)


def time_to_target(
    runs: pd.DataFrame,
    rule: TargetRule | None = None,
    smooth_fraction: float = SMOOTH_FRACTION,
    main_beta: float = MAIN_BETA,
) -> pd.DataFrame:
    """The time-to-target table (columns :data:`TABLE_COLUMNS`), rows sorted by workload and
    optimizer order, over the main comparison runs (:func:`analysis.select.main_runs`).

    ``iterations``/``grad_evals``/``seconds`` are means over seeds when ``seeds_reached == seeds``,
    else NaN; ``*_ratio`` divide them by the reference optimizer's; ``final``/``final_std`` are the mean
    and sample standard deviation over seeds of the metric's last finite value (std NaN for one seed).
    Workloads without a target
    (no reference runs and no fixed value) are left out.
    """
    rule = rule or TargetRule()
    rows = []
    data = main_runs(runs, main_beta)
    for workload in sorted(data["workload"].dropna().unique()):
        wl = with_labels(data[data["workload"] == workload])
        target, _, _ = workload_target(wl, rule, smooth_fraction)
        if target is None:
            continue
        frame, column = _metric_frame(wl, rule, smooth_fraction)
        per_opt = {}
        reaches: dict[str, pd.DataFrame] = {}
        first = wl.drop_duplicates("label")
        optimizer_of = dict(zip(first["label"], first["optimizer"], strict=True))
        for label in sorted(optimizer_of, key=lambda lab: (optimizer_sort_key(optimizer_of[lab]), lab)):
            run_ids = sorted(wl.loc[wl["label"] == label, "run_id"].unique())
            rows_of_label = frame[frame["label"] == label]
            reach = first_reach(rows_of_label, column, target, rule.higher_is_better).reindex(run_ids)
            finals = final_values(rows_of_label, column).reindex(run_ids).dropna()
            reached = int(reach["iteration"].notna().sum())
            complete = reached == len(run_ids) and reached > 0
            if rule.aggregate == "median":
                med = reach[["iteration", "grad_evals", "wall_s"]].fillna(np.inf).median()
                stat = med.where(np.isfinite(med), np.nan) if len(run_ids) else med * np.nan
            else:
                stat = reach[["iteration", "grad_evals", "wall_s"]].mean() if complete else None
            iv_final = mean_interval(finals.tolist())
            iv_iters = mean_interval(reach["iteration"].tolist()) if complete else None
            reaches[label] = reach.assign(seed=wl.drop_duplicates("run_id").set_index("run_id")["seed"],
                                          process=wl.drop_duplicates("run_id").set_index("run_id")["process"]
                                          if "process" in wl else reach.index)
            per_opt[label] = {
                "workload": workload,
                "optimizer": optimizer_of[label],
                "label": label,
                "metric": rule.metric,
                "target": target,
                "seeds": len(run_ids),
                "seeds_reached": reached,
                "iterations": stat["iteration"] if stat is not None else np.nan,
                "grad_evals": stat["grad_evals"] if stat is not None else np.nan,
                "seconds": stat["wall_s"] if stat is not None else np.nan,
                "final": float(finals.mean()) if len(finals) else np.nan,
                "final_std": float(finals.std(ddof=1)) if len(finals) > 1 else np.nan,
                "final_low": iv_final.low, "final_high": iv_final.high,
                "iterations_low": iv_iters.low if iv_iters else np.nan,
                "iterations_high": iv_iters.high if iv_iters else np.nan,
            }
        ref_label = reference_label(wl, rule, smooth_fraction)
        ref = per_opt.get(ref_label) if ref_label is not None else None
        for label, row in per_opt.items():
            for col in ("iterations", "grad_evals"):
                denom = ref[col] if ref is not None else np.nan
                row[f"{col}_ratio"] = row[col] / denom if denom and np.isfinite(denom) else np.nan
            ratio, pairs = same_process_ratio(reaches[label], reaches.get(ref_label)) if ref_label else (np.nan, 0)
            if not (ref is not None and np.isfinite(row["seconds"]) and np.isfinite(ref["seconds"])):
                ratio, pairs = np.nan, 0  # either side not reported under the rule's aggregate
            row["seconds_ratio"], row["seconds_pairs"] = ratio, pairs
            rows.append(row)
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def same_process_ratio(mine: pd.DataFrame, ref: pd.DataFrame | None) -> tuple[float, int]:
    """Seconds to target of ``mine`` over the reference's, seed by seed, counting only the seeds whose
    two runs shared one process (equal ``process``: one clock, :func:`analysis.load.run_process`) and both
    reached the target; (median of those ratios, their number). Seconds of runs in different
    processes are never compared: NaN and 0 when no seed qualifies."""
    if ref is None or "seed" not in mine or "seed" not in ref:
        return float("nan"), 0
    a = mine.dropna(subset=["seed"]).drop_duplicates("seed").set_index("seed")
    b = ref.dropna(subset=["seed"]).drop_duplicates("seed").set_index("seed")
    ratios = []
    for seed in a.index.intersection(b.index):
        sa, sb = a.loc[seed], b.loc[seed]
        if sa["process"] != sb["process"]:
            continue
        if np.isfinite(sa["wall_s"]) and np.isfinite(sb["wall_s"]) and sb["wall_s"] > 0:
            ratios.append(float(sa["wall_s"] / sb["wall_s"]))
    return (float(np.median(ratios)) if ratios else float("nan")), len(ratios)


def time_to_target_markdown(
    table: pd.DataFrame,
    runs: pd.DataFrame,
    rule: TargetRule | None = None,
    heading_level: int = 3,
    smooth_fraction: float = SMOOTH_FRACTION,
    main_beta: float = MAIN_BETA,
) -> str:
    """Markdown: per workload a heading, the caption stating the rule and target, and the table.

    ``runs`` is needed for the caption (the reference's final value and seed count).
    """
    rule = rule or TargetRule()
    ref = rule.reference
    parts = []
    data = main_runs(runs, main_beta)
    for workload in sorted(table["workload"].unique()):
        rows = table[table["workload"] == workload]
        target, ref_final, ref_seeds = workload_target(with_labels(data[data["workload"] == workload]), rule,
                                                       smooth_fraction)
        header = [
            "optimizer",
            "seeds reaching",
            "iterations",
            "grad evals",
            "seconds",
            f"iterations / {ref}",
            f"grad evals / {ref}",
            f"seconds / {ref} (same process)",
            f"final {_METRIC_NAMES[rule.metric].split(' (')[0]} [95%]",
        ]
        body = []
        for _, r in rows.iterrows():
            body.append(
                [
                    r["label"],
                    f"{r['seeds_reached']}/{r['seeds']}",
                    fmt(r["iterations"], 1, NOT_REACHED),
                    fmt(r["grad_evals"], 1, NOT_REACHED),
                    fmt(r["seconds"], 2, NOT_REACHED),
                    fmt(r["iterations_ratio"], 3),
                    fmt(r["grad_evals_ratio"], 3),
                    fmt(r["seconds_ratio"], 3) + (f" ({int(r['seconds_pairs'])} seeds)" if r["seconds_pairs"] else ""),
                    fmt(r["final"], 4) + ("" if np.isnan(r["final_low"]) else
                                          f" [{fmt(r['final_low'], 4)}, {fmt(r['final_high'], 4)}]"),
                ]
            )
        ref_label = reference_label(with_labels(data[data["workload"] == workload]), rule, smooth_fraction)
        caption = rule.caption(float(target), ref_final, ref_seeds, workload, ref_label) if target is not None else ""
        parts.append(f"{'#' * heading_level} Time to target: {workload}\n\n{caption}\n\n{markdown_table(header, body)}")
    return "\n".join(parts)


TRIAL_FRACTION = 0.99

#: The rule of tuned results (a folder with tuning trials): 0.99 x the tuned sgd's final test accuracy,
#: mean over its final seeds, and AlgoPerf's median over seeds. It replaced 0.99 x the best single-seed
#: trial (:func:`targets_from_trials`), whose maximum over 36 noisy trials set targets that only the
#: optimizer of that trial reached.
TUNED_RULE = TargetRule(
    aggregate="median",
    note=("Rule fixed on 2026-12-07, before the finals of sgd_normalized, the ResNet diagnosis and the "
          "16-epoch ResNet stage were read; it replaced 0.99 × the best single-seed tuning trial, a maximum "
          "over 36 noisy trials."),
)


def targets_from_trials(trials: pd.DataFrame, fraction: float = TRIAL_FRACTION) -> TargetRule:
    """AlgoPerf-style fixed targets: per workload, ``fraction`` x the best final test accuracy that any
    optimizer's tuning trial reached (seed 0, at the trial length). They are fixed once the trials
    have run, before any final run, and are the same for every optimizer."""
    best = trials.groupby("workload")["final_test_acc"].max().dropna()
    how = (f"fixed before the finals: {fraction:g} × the best final test accuracy of any optimizer's tuning trial "
           "(seed 0, at the trial length)")
    return TargetRule(metric="test_acc", per_workload=tuple((str(w), float(v) * fraction) for w, v in best.items()),
                      per_workload_how=how, aggregate="median")


def time_to_target_csv_frame(table: pd.DataFrame) -> pd.DataFrame:
    """The table as written to CSV (same columns; counts as integers)."""
    out = table.copy()
    out["seeds"] = out["seeds"].astype(int)
    out["seeds_reached"] = out["seeds_reached"].astype(int)
    out["seconds_pairs"] = out["seconds_pairs"].astype(int)
    return out
