"""Chosen runs side by side: ``python -m analysis compare RUN_OR_FOLDER ... [filters]``.

Runs are read from every path given (a results tree, the folder ``python -m experiments.run --out``
wrote, a workload folder or single run CSVs; see :func:`analysis.load.run_csv_paths`), filtered by
workload, optimizer and settings, and grouped by configuration (runs that differ only in the seed;
:mod:`analysis.configs`). Per configuration the table gives:

- ``final test acc``: the last evaluation's test accuracy, mean over seeds; ``best test acc``: each
  seed's highest, mean over seeds;
- ``final train loss``: the EMA-smoothed train loss at the last iteration (span as in the convergence
  figures), mean over seeds; ``best train loss``: its minimum, mean over seeds;
- time to target: iterations and training seconds until the first evaluation at or above the target
  test accuracy, median over seeds with a seed that never reaches it counted as infinite (AlgoPerf's
  rule), and how many seeds reach it. Default target: 0.99 x the best final test accuracy among the
  compared configurations of the workload (``--target`` sets it);
- ``s / iteration``: training seconds (evaluation excluded) per iteration, median over seeds.

One figure per workload: the convergence grid of the compared configurations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.configs import OPTIMIZER_PREFIX, format_value, with_labels
from analysis.curves import SMOOTH_FRACTION, evals, plot_configurations, smoothed_train
from analysis.load import SchemaError, load_runs
from analysis.style import optimizer_sort_key, safe_name, save_figure
from analysis.tables import fmt, markdown_table
from analysis.targets import first_reach

#: Default target: this fraction of the best final test accuracy among the compared configurations.
TARGET_FRACTION = 0.99

#: Columns of :func:`compare_table`.
COLUMNS: tuple[str, ...] = (
    "workload", "label", "optimizer", "seeds", "status", "final_test_acc", "best_test_acc", "final_train_loss",
    "best_train_loss", "target", "seeds_reached", "iterations_to_target", "seconds_to_target", "iterations",
    "s_per_iteration",
)


@dataclass(frozen=True)
class Selection:
    """Which runs to compare: every filter that is not empty must hold.

    ``where`` holds ``(setting, value)`` pairs; a setting is a key of the run's configuration, an
    optimizer setting with or without its ``optimizer.`` prefix (``lr``, ``optimizer.lr``,
    ``epochs``, ``data.train_subset``). Numbers match to a relative 1e-9.
    """

    workloads: tuple[str, ...] = ()
    optimizers: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()


def parse_where(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``["lr=0.2", "beta=0.99"]`` -> ``(("lr", "0.2"), ("beta", "0.99"))``; ValueError for an item
    without ``=``."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--where must be SETTING=VALUE (e.g. lr=0.2), got {item!r}")
        out.append((key.strip(), value.strip()))
    return tuple(out)


def _matches(settings: dict, key: str, wanted: str) -> bool:
    for name in (key, OPTIMIZER_PREFIX + key):
        if name in settings:
            value = settings[name]
            try:
                return math.isclose(float(value), float(wanted), rel_tol=1e-9)
            except (TypeError, ValueError):
                return format_value(value).lower() == wanted.lower() or str(value) == wanted
    return False


def select_runs(runs: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    """The rows of ``runs`` (as from :func:`analysis.load.load_runs`) that ``selection`` keeps;
    ValueError naming the filter and the values present when nothing is left."""
    out = runs
    if selection.workloads:
        missing = [w for w in selection.workloads if w not in set(runs["workload"].unique())]
        if missing:
            raise ValueError(f"--workload must be among {sorted(runs['workload'].unique())}, got {missing}")
        out = out[out["workload"].isin(selection.workloads)]
    if selection.optimizers:
        present = set(out["optimizer"].unique())
        missing = [o for o in selection.optimizers if o not in present]
        if missing:
            raise ValueError(f"--optimizer must be among {sorted(present)}, got {missing}")
        out = out[out["optimizer"].isin(selection.optimizers)]
    if selection.where:
        settings = {rid: json.loads(s) if isinstance(s, str) and s else {}
                    for rid, s in out.drop_duplicates("run_id")[["run_id", "settings"]].itertuples(index=False)}
        keep = {rid for rid, st in settings.items() if all(_matches(st, k, v) for k, v in selection.where)}
        kept = out[out["run_id"].isin(keep)]
        if kept.empty:
            known = sorted({k.removeprefix(OPTIMIZER_PREFIX) for st in settings.values() for k in st})
            raise ValueError(f"no run matches --where {' '.join(f'{k}={v}' for k, v in selection.where)}; "
                             f"settings recorded: {', '.join(known) or 'none (runs without manifests)'}")
        out = kept
    return out


def _per_run(train: pd.DataFrame, ev: pd.DataFrame) -> pd.DataFrame:
    """One row per run: last/best test accuracy, last/best smoothed loss, last iteration, s/iteration."""
    rows = {}
    for rid, run in train.groupby("run_id", sort=True):
        loss = run["train_loss_smooth"].to_numpy(dtype=float)
        finite = loss[np.isfinite(loss)]
        last = run.iloc[-1]
        it = float(last["iteration"])
        rows[rid] = {
            "final_train_loss": float(loss[-1]) if len(loss) else np.nan,
            "best_train_loss": float(finite.min()) if len(finite) else np.nan,
            "iterations": it,
            "s_per_iteration": float(last["wall_s"]) / it if it > 0 else np.nan,
        }
    for rid, run in ev.groupby("run_id", sort=True):
        acc = run["test_acc"].to_numpy(dtype=float)
        rows.setdefault(rid, {}).update(final_test_acc=float(acc[-1]), best_test_acc=float(np.nanmax(acc)))
    return pd.DataFrame.from_dict(rows, orient="index")


def compare_table(
    runs: pd.DataFrame, target: float | None = None, smooth_fraction: float = SMOOTH_FRACTION
) -> pd.DataFrame:
    """The comparison table (columns :data:`COLUMNS`), one row per (workload, configuration), rows in
    the suite's optimizer order. ``target``: test accuracy of the time-to-target columns (default: see
    the module docstring)."""
    rows = []
    for workload in sorted(runs["workload"].dropna().unique()):
        wl = with_labels(runs[runs["workload"] == workload])
        train, ev = smoothed_train(wl, smooth_fraction), evals(wl)
        per_run = _per_run(train, ev)
        first = wl.drop_duplicates("label")
        optimizer_of = dict(zip(first["label"], first["optimizer"], strict=True))
        labels = sorted(optimizer_of, key=lambda lab: (optimizer_sort_key(optimizer_of[lab]), lab))
        ids = {lab: sorted(wl.loc[wl["label"] == lab, "run_id"].unique()) for lab in labels}
        finals = {lab: per_run.reindex(ids[lab]).get("final_test_acc", pd.Series(dtype=float)).mean()
                  for lab in labels}
        known = [v for v in finals.values() if np.isfinite(v)]
        goal = target if target is not None else (TARGET_FRACTION * max(known) if known else np.nan)
        for lab in labels:
            mine = per_run.reindex(ids[lab])
            reach = first_reach(ev[ev["label"] == lab], "test_acc", goal, True).reindex(ids[lab]) if np.isfinite(
                goal) else pd.DataFrame(index=ids[lab], columns=["iteration", "wall_s"], dtype=float)
            med = reach[["iteration", "wall_s"]].astype(float).fillna(np.inf).median()
            states = wl.drop_duplicates("run_id").set_index("run_id")["status"] if "status" in wl else None
            status = "unknown" if states is None else ", ".join(
                f"{n} {st}" if n > 1 or len(ids[lab]) > 1 else st
                for st, n in states.reindex(ids[lab]).fillna("unknown").value_counts().sort_index().items())
            rows.append({
                "workload": workload, "label": lab, "optimizer": optimizer_of[lab], "seeds": len(ids[lab]),
                "status": status,
                **{c: float(mine[c].mean()) if c in mine else np.nan for c in (
                    "final_test_acc", "best_test_acc", "final_train_loss", "best_train_loss")},
                "target": goal, "seeds_reached": int(reach["iteration"].notna().sum()),
                "iterations_to_target": med["iteration"] if np.isfinite(med["iteration"]) else np.nan,
                "seconds_to_target": med["wall_s"] if np.isfinite(med["wall_s"]) else np.nan,
                "iterations": float(mine["iterations"].median()) if "iterations" in mine else np.nan,
                "s_per_iteration": float(mine["s_per_iteration"].median()) if "s_per_iteration" in mine else np.nan,
            })
    return pd.DataFrame(rows, columns=list(COLUMNS))


def compare_markdown(table: pd.DataFrame, target_given: bool = False) -> str:
    """Markdown: per workload a caption stating the target and a table."""
    parts = []
    for workload, sub in table.groupby("workload", sort=True):
        goal = float(sub["target"].iloc[0])
        how = "given" if target_given else f"{TARGET_FRACTION:g} × the best final test accuracy compared"
        header = ["configuration", "seeds", "status", "final test acc", "best test acc", "final train loss",
                  "best train loss", "seeds reaching", "iterations to target", "seconds to target",
                  "iterations", "ms / iteration"]
        body = [[r["label"], str(r["seeds"]), r["status"], fmt(r["final_test_acc"], 4), fmt(r["best_test_acc"], 4),
                 fmt(r["final_train_loss"], 4), fmt(r["best_train_loss"], 4), f"{r['seeds_reached']}/{r['seeds']}",
                 fmt(r["iterations_to_target"], 0, "not reached"), fmt(r["seconds_to_target"], 2, "not reached"),
                 fmt(r["iterations"], 0), fmt(r["s_per_iteration"] * 1e3, 2)]
                for _, r in sub.iterrows()]
        caption = (f"{workload}: target test accuracy {fmt(goal, 4)} ({how}); losses EMA-smoothed; time to target "
                   "is the median over seeds (a seed that never reaches it counts as infinite); status from the "
                   "runs' manifests (a run still running or failed is compared as far as it got).")
        parts.append(caption + "\n\n" + markdown_table(header, body))
    return "\n".join(parts)


def compare(
    paths: Sequence[Path | str],
    selection: Selection = Selection(),
    target: float | None = None,
    figure: Path | str | None = Path("compare.png"),
) -> tuple[pd.DataFrame, str, list[Path]]:
    """Read, select and compare; returns (table, markdown, figure paths written). ``figure``: the
    figure's path (one workload), or the stem ``<figure stem>_<workload>.png`` of one per workload;
    ``None`` writes none. ValueError (SchemaError included) when a path holds no runs or nothing is
    selected."""
    if target is not None and not (math.isfinite(target) and 0 < target <= 1):
        raise ValueError(f"--target must be a test accuracy in (0, 1], got {target}")
    if figure is not None and (Path(figure).is_dir() or Path(figure).suffix.lower() != ".png"):
        raise ValueError(f"--out must be a .png file path, got {figure}")
    frames = []
    for path in dict.fromkeys(Path(p).resolve() for p in paths):  # the same folder named twice counts once
        runs = load_runs(path)
        if runs is None:
            raise SchemaError(f"{path}: no run CSVs found (expected a results tree with runs/, the folder "
                              "`python -m experiments.run --out` wrote, a workload folder or a run CSV)")
        frames.append(runs)
    runs = pd.concat(frames, ignore_index=True).drop_duplicates(["run_id", "kind", "iteration", "source"])
    duplicated = runs.groupby("run_id")["source"].nunique()
    if (duplicated > 1).any():
        rid = duplicated[duplicated > 1].index[0]
        raise ValueError(f"run {rid} was found in two places; give each run once")
    selected = select_runs(runs, selection)
    table = compare_table(selected, target)
    written = []
    if figure is not None:
        figure = Path(figure)
        workloads = sorted(selected["workload"].unique())
        for workload in workloads:
            path = figure if len(workloads) == 1 else figure.with_name(f"{figure.stem}_{safe_name(workload)}.png")
            fig = plot_configurations(selected[selected["workload"] == workload], title=f"{workload}: compared runs")
            written.append(save_figure(fig, path))
    return table, compare_markdown(table, target is not None), written
