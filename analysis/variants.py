"""Ours against the authors' reference code, one difference at a time (``<results>/authors/runs``,
written by ``python -m experiments.suite --preset authors --out results/authors``).

Runs are grouped by their full resolved optimizer configuration (the manifest's ``optimizer_config``)
minus the seed, never by the optimizer name alone: each group is one variant. Its label is the
optimizer name plus the optimizer settings the run set on the command line (``--set optimizer.x=...``),
lr excepted (every variant of the preset runs at the same lr). Final test accuracy: the last evaluation; final
train loss: the mean of the last 5% of the training iterations; both averaged over seeds, with the
spread (standard deviation over seeds) beside them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.load import RUN_COLUMNS, RUN_NUMERIC, read_checked_csv
from analysis.style import new_figure, optimizer_color, styled
from analysis.tables import fmt, markdown_table

FOLDER = "authors"
REFERENCE = "mlbfgs_authors"  # the variant every other is compared with: the authors' code as it is
TAIL_FRACTION = 0.05
SUMMARY_COLUMNS: tuple[str, ...] = ("workload", "variant", "optimizer", "seeds", "final_test_acc",
                                    "final_test_acc_sd", "final_train_loss", "final_train_loss_sd",
                                    "delta_test_acc")


def _label(optimizer: str, overrides: dict) -> str:
    diff = [f"{k.split('.', 1)[1]}={json.dumps(v) if isinstance(v, bool) else v}"
            for k, v in sorted(overrides.items()) if k.startswith("optimizer.") and k != "optimizer.lr"]
    return optimizer + (" " + " ".join(diff) if diff else "")


def load_variant_runs(results: Path | str, folder: str = FOLDER) -> pd.DataFrame | None:
    """One row per finished run of ``<results>/<folder>/runs``: workload, variant, optimizer, seed,
    final_test_acc, final_train_loss (and ``overrides``, the optimizer settings set on the command
    line, lr excepted); None when the folder holds none."""
    root = Path(results) / folder / "runs"
    rows = []
    labels: dict[tuple[str, str], str] = {}
    for manifest_path in sorted(root.glob("*/*.json")):
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("status") != "finished":
            continue
        optimizer = manifest["optimizer"]
        config = json.dumps(manifest.get("optimizer_config", {}), sort_keys=True, default=str)
        label = _label(optimizer, manifest.get("overrides") or {})
        if labels.setdefault((optimizer, config), label) != label:
            other = labels[(optimizer, config)]
            raise ValueError(f"{manifest_path}: the same configuration is labelled {label!r} and {other!r}")
        df = read_checked_csv(manifest_path.with_suffix(".csv"), RUN_COLUMNS, RUN_NUMERIC)
        train = df[df["kind"] == "train"]
        evals = df[df["kind"] == "eval"].dropna(subset=["test_acc"])
        tail = max(1, int(len(train) * TAIL_FRACTION))
        rows.append({"workload": manifest["workload"], "variant": label, "config": config,
                     "optimizer": optimizer, "seed": int(manifest["seed"]),
                     "overrides": json.dumps({k: v for k, v in (manifest.get("overrides") or {}).items()
                                              if k.startswith("optimizer.") and k != "optimizer.lr"},
                                             sort_keys=True),
                     "final_test_acc": float(evals["test_acc"].iloc[-1]) if len(evals) else np.nan,
                     "final_train_loss": float(train["train_loss"].iloc[-tail:].mean()) if len(train) else np.nan})
    return pd.DataFrame(rows) if rows else None


def variant_summary(runs: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Mean and standard deviation over seeds per (workload, variant); delta_test_acc = the variant's
    mean final test accuracy minus the ``reference`` variant's (default: ``mlbfgs_authors`` with no
    switch)."""
    if runs.groupby(["workload", "variant"])["config"].nunique().max() > 1:
        raise ValueError("two configurations share a label; their runs must not be pooled")
    grouped = runs.groupby(["workload", "variant", "optimizer"])
    out = grouped.agg(seeds=("seed", "nunique"), final_test_acc=("final_test_acc", "mean"),
                      final_test_acc_sd=("final_test_acc", "std"), final_train_loss=("final_train_loss", "mean"),
                      final_train_loss_sd=("final_train_loss", "std")).reset_index()
    ref = out[out["variant"] == reference].set_index("workload")["final_test_acc"]
    out["delta_test_acc"] = out["final_test_acc"] - out["workload"].map(ref)
    out["_r"] = out["variant"] != reference
    out = out.sort_values(["workload", "_r", "optimizer", "variant"], kind="stable").drop(columns="_r")
    return out[list(SUMMARY_COLUMNS)].reset_index(drop=True)


def variant_markdown(summary: pd.DataFrame) -> str:
    caption = (
        "Each row one configuration (seeds pooled, never configurations): final test accuracy (last "
        "evaluation) and final train loss (mean of the last 5% of iterations), mean ± standard deviation "
        f"over seeds; 'vs authors' = mean final test accuracy minus that of `{REFERENCE}` (the authors' block "
        f"code as it is). A `{REFERENCE}` row with a setting is the authors' code with that one behaviour "
        "switched to ours.\n"
    )
    return caption + "\n" + variant_table(summary, "vs authors")


def variant_table(summary: pd.DataFrame, delta_header: str) -> str:
    """The markdown table of :func:`variant_summary` (one row per configuration)."""
    header = ["workload", "configuration", "seeds", "final test acc", "final train loss", delta_header]
    body = [[r.workload, f"`{r.variant}`", str(int(r.seeds)),
             f"{fmt(r.final_test_acc, 4)} ± {fmt(r.final_test_acc_sd, 4)}",
             f"{fmt(r.final_train_loss, 4)} ± {fmt(r.final_train_loss_sd, 4)}",
             ("+" if r.delta_test_acc > 0 else "") + fmt(r.delta_test_acc, 4)] for r in summary.itertuples()]
    return markdown_table(header, body, "llrrrr")


def plot_variants(runs: pd.DataFrame, summary: pd.DataFrame,
                  title: str = "Ours against the authors' code, one difference at a time") -> Figure:
    """Per workload, one horizontal bar per configuration (mean final test accuracy), seeds as dots."""
    workloads = sorted(summary["workload"].unique())
    with styled():
        height = 1.2 + 0.35 * summary.groupby("workload").size().max()
        fig, axes = new_figure(1, len(workloads), 7.5 * len(workloads), height)
        for ax, workload in zip(axes, workloads, strict=True):
            sub = summary[summary["workload"] == workload].reset_index(drop=True)
            ys = np.arange(len(sub))[::-1]
            ax.barh(ys, sub["final_test_acc"], color=[optimizer_color(o) for o in sub["optimizer"]], alpha=0.6)
            for y, variant in zip(ys, sub["variant"], strict=True):
                pts = runs[(runs["workload"] == workload) & (runs["variant"] == variant)]["final_test_acc"]
                ax.plot(pts, [y] * len(pts), "o", color="#222222", markersize=3)
            ax.set_yticks(ys, sub["variant"], fontsize=7)
            lo = float(np.nanmin(runs[runs["workload"] == workload]["final_test_acc"]))
            ax.set_xlim(max(0.0, lo - 0.05), min(1.0, float(np.nanmax(sub["final_test_acc"])) + 0.03))
            ax.set_xlabel("final test accuracy")
            ax.set_title(workload)
        fig.suptitle(title)
    return fig
