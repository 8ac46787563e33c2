"""Stability of stochastic L-BFGS against the momentum coefficient beta (the paper's main claim).

Runs: mlbfgs with several beta (from the manifests) and slbfgs (beta = 0), see
:func:`analysis.select.ablation_runs`. Curvature pairs: ``mu = s.y / s.s`` before damping and whether
the pair was accepted, from the ``<run_id>.curvature.csv`` files.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from analysis.curves import (
    SMOOTH_FRACTION,
    diverged_runs,
    draw_band,
    draw_loss,
    evals,
    finish_loss_axis,
    seed_band,
    smoothed_train,
)
from analysis.load import run_info
from analysis.select import ablation_runs
from analysis.style import beta_color, beta_label, new_figure, styled
from analysis.tables import fmt, markdown_table

#: Curvature bounds (sigma_L, sigma_H) of the damping rule (library defaults), drawn as a band.
DEFAULT_BOUNDS: tuple[float, float] = (0.01, 1.5)

#: Share of the last train rows averaged into the "final train loss".
FINAL_FRACTION = 0.05

#: Columns of :func:`stability_summary`.
SUMMARY_COLUMNS: tuple[str, ...] = (
    "workload",
    "beta",
    "runs",
    "nonfinite_runs",
    "final_train_loss",
    "final_test_acc",
    "pairs",
    "rejected_fraction",
    "mu_q10",
    "mu_median",
    "mu_q90",
    "mu_negative_fraction",
    "mu_outside_bounds_fraction",
)


def curvature_pairs(curvature: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Curvature rows of the ablation runs with their workload, optimizer, seed and beta attached."""
    info = run_info(ablation_runs(runs))
    return curvature.merge(info, on="run_id", how="inner").sort_values(
        ["workload", "beta", "run_id", "iteration", "block"], kind="stable"
    )


def stability_workloads(runs: pd.DataFrame) -> list[str]:
    """Workloads whose ablation runs cover at least two distinct betas (sorted)."""
    abl = ablation_runs(runs)
    counts = abl.groupby("workload")["beta"].nunique()
    return sorted(counts[counts >= 2].index)


def _final_loss(train: pd.DataFrame) -> float:
    """Mean over runs of the mean raw train loss over each run's last FINAL_FRACTION of rows; NaN if a
    run's loss is non-finite there."""
    finals = []
    for _, run in train.groupby("run_id", sort=True):
        n = max(1, int(round(FINAL_FRACTION * len(run))))
        tail = run.sort_values("iteration")["train_loss"].to_numpy(dtype=float)[-n:]
        finals.append(float(np.mean(tail)) if np.isfinite(tail).all() else np.nan)
    return float(np.mean(finals)) if finals else np.nan


def stability_summary(
    runs: pd.DataFrame,
    curvature: pd.DataFrame | None,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> pd.DataFrame:
    """Per workload (with >= 2 betas) and beta: runs, runs with a non-finite train loss, final train
    loss (see :func:`_final_loss`), final test accuracy (last evaluation, mean over runs), curvature
    pairs, fraction rejected, 10/50/90% quantiles of mu, fraction of mu < 0 and outside ``bounds``."""
    abl = ablation_runs(runs)
    pairs = curvature_pairs(curvature, runs) if curvature is not None else None
    rows = []
    for workload in stability_workloads(runs):
        wl = abl[abl["workload"] == workload]
        for beta in sorted(wl["beta"].unique()):
            group = wl[wl["beta"] == beta]
            train = group[group["kind"] == "train"]
            ev = evals(group)
            last_acc = ev.groupby("run_id")["test_acc"].last()
            bad = train[~np.isfinite(train["train_loss"].to_numpy(dtype=float))]["run_id"].nunique()
            row: dict[str, object] = {
                "workload": workload,
                "beta": float(beta),
                "runs": int(group["run_id"].nunique()),
                "nonfinite_runs": int(bad),
                "final_train_loss": _final_loss(train),
                "final_test_acc": float(last_acc.mean()) if len(last_acc) else np.nan,
            }
            cv = pairs[(pairs["workload"] == workload) & (pairs["beta"] == beta)] if pairs is not None else None
            if cv is not None and len(cv):
                mu = cv["mu"].to_numpy(dtype=float)
                fin = mu[np.isfinite(mu)]
                row.update(
                    pairs=len(cv),
                    rejected_fraction=float((~cv["accepted"]).mean()),
                    mu_q10=float(np.quantile(fin, 0.1)) if len(fin) else np.nan,
                    mu_median=float(np.median(fin)) if len(fin) else np.nan,
                    mu_q90=float(np.quantile(fin, 0.9)) if len(fin) else np.nan,
                    mu_negative_fraction=float((mu < 0).mean()),
                    mu_outside_bounds_fraction=float(((mu < bounds[0]) | (mu > bounds[1]) | ~np.isfinite(mu)).mean()),
                )
            else:
                row.update(pairs=0)
            rows.append(row)
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def stability_markdown(summary: pd.DataFrame, bounds: tuple[float, float] = DEFAULT_BOUNDS) -> str:
    """Markdown table of :func:`stability_summary` with a caption explaining the columns."""
    caption = (
        "Stability against the momentum coefficient beta (beta = 0: stochastic L-BFGS without momentum). "
        "mu = s.y / s.s of each curvature pair before damping; quantiles over all pairs of all seeds; "
        f"'outside' = share of mu outside the damping bounds [{bounds[0]:g}, {bounds[1]:g}] or non-finite; "
        f"final train loss: mean of the last {FINAL_FRACTION:.0%} of iterations, mean over seeds "
        "('non-finite' when a run's loss is).\n"
    )
    header = [
        "workload",
        "beta",
        "runs",
        "non-finite loss",
        "final train loss",
        "final test acc",
        "pairs",
        "rejected",
        "mu 10%",
        "mu median",
        "mu 90%",
        "mu < 0",
        "outside bounds",
    ]
    body = [
        [
            r["workload"],
            f"{r['beta']:g}",
            str(int(r["runs"])),
            str(int(r["nonfinite_runs"])),
            fmt(r["final_train_loss"], 4, "non-finite"),
            fmt(r["final_test_acc"], 4),
            str(int(r["pairs"])),
            fmt(r["rejected_fraction"], 3),
            fmt(r["mu_q10"], 4),
            fmt(r["mu_median"], 4),
            fmt(r["mu_q90"], 4),
            fmt(r["mu_negative_fraction"], 3),
            fmt(r["mu_outside_bounds_fraction"], 3),
        ]
        for _, r in summary.iterrows()
    ]
    return caption + "\n" + markdown_table(header, body, "l" + "r" * (len(header) - 1))


def plot_stability(
    runs: pd.DataFrame,
    curvature: pd.DataFrame | None,
    workload: str,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    smooth_fraction: float = SMOOTH_FRACTION,
) -> Figure:
    """Stability figure of one workload, one colour per beta: (a) smoothed train loss and (b) test
    accuracy vs iteration (mean, min–max band over seeds); (c) mu of every curvature pair over
    training (x = rejected); (d) distribution of mu per beta (box 25–75%, whiskers 5–95%) with the
    fraction of rejected pairs. mu axes are symlog (linear within ±0.01); the grey band marks the
    damping bounds."""
    abl = ablation_runs(runs)
    wl = abl[abl["workload"] == workload]
    if wl.empty:
        raise ValueError(f"workload {workload!r} has no mlbfgs/slbfgs runs with a known beta")
    betas = sorted(wl["beta"].unique())
    train = smoothed_train(wl, smooth_fraction)
    ev = evals(wl)
    pairs = curvature_pairs(curvature, wl) if curvature is not None else pd.DataFrame()
    summary = stability_summary(runs[runs["workload"] == workload], curvature, bounds)
    with styled():
        fig, (ax_loss, ax_acc, ax_mu, ax_box) = new_figure(2, 2, 13, 9.5)
        style = {"linewidth": 2.0, "zorder": 4, "alpha": 1.0}
        handles = []
        initial = []
        for beta in betas:
            color = beta_color(beta)
            tr = train[train["beta"] == beta]
            band = seed_band(tr, "iteration", "train_loss_smooth")
            initial.append(draw_loss(ax_loss, band, color, style, diverged=bool(diverged_runs(tr))))
            draw_band(ax_acc, seed_band(ev[ev["beta"] == beta], "iteration", "test_acc"), color, style)
            n = wl.loc[wl["beta"] == beta, "run_id"].nunique()
            handles.append(
                Line2D(
                    [], [], color=color, linewidth=2.0, label=f"{beta_label(beta)} ({n} seed{'s' if n != 1 else ''})"
                )
            )
        positive = train["train_loss_smooth"].to_numpy(dtype=float)
        positive = positive[np.isfinite(positive)]
        finish_loss_axis(ax_loss, bool(len(positive)) and bool((positive > 0).all()), initial)
        ax_loss.set(
            xlabel="iteration", ylabel="train loss (EMA-smoothed)", title="(a) train loss; × = loss became non-finite"
        )
        ax_acc.set(xlabel="iteration", ylabel="test accuracy (%)", title="(b) test accuracy")
        ax_acc.yaxis.set_major_formatter(PercentFormatter(1.0))
        for ax in (ax_mu, ax_box):
            ax.axhspan(bounds[0], bounds[1], color="0.85", zorder=0, label="damping bounds")
        if len(pairs):
            for beta in betas:
                cv = pairs[pairs["beta"] == beta]
                acc = cv[cv["accepted"]]
                rej = cv[~cv["accepted"]]
                ax_mu.scatter(acc["iteration"], acc["mu"], s=9, color=beta_color(beta), alpha=0.6, linewidths=0)
                ax_mu.scatter(rej["iteration"], rej["mu"], s=18, color=beta_color(beta), marker="x", linewidths=1)
            labels = [beta_label(b) for b in betas]
            data = pairs.assign(label=pairs["beta"].map(beta_label))
            palette = {beta_label(b): beta_color(b) for b in betas}
            values = [data.loc[data["label"] == lab, "mu"].to_numpy(dtype=float) for lab in labels]
            boxes = ax_box.boxplot(
                [v[np.isfinite(v)] for v in values],
                positions=range(len(labels)),
                orientation="vertical",
                whis=(5, 95),
                widths=0.6,
                patch_artist=True,
                showfliers=False,
                medianprops={"color": "black"},
            )
            for patch, lab in zip(boxes["boxes"], labels, strict=True):
                patch.set_facecolor(palette[lab])
                patch.set_alpha(0.75)
            jitter = np.random.default_rng(0)  # fixed: the same figure gives the same bytes
            for i, (v, lab) in enumerate(zip(values, labels, strict=True)):
                xs = i + jitter.uniform(-0.22, 0.22, size=len(v))
                ax_box.scatter(xs, v, s=5, color=palette[lab], alpha=0.5, linewidths=0, zorder=3)
            ax_box.set_yscale("symlog", linthresh=bounds[0])
            ax_mu.set_yscale("symlog", linthresh=bounds[0])
            ticks = []
            for beta in betas:
                row = summary[summary["beta"] == beta]
                n_pairs = int(row["pairs"].iloc[0]) if len(row) else 0
                rejected = f"{row['rejected_fraction'].iloc[0]:.1%}" if n_pairs else "n/a"
                ticks.append(f"{beta_label(beta)}\nrejected {rejected}\nof {n_pairs} pairs")
            ax_box.set_xticks(range(len(betas)), ticks)
        else:
            for ax in (ax_mu, ax_box):
                ax.text(0.5, 0.5, "no curvature CSVs", transform=ax.transAxes, ha="center", va="center")
        ax_mu.set(
            xlabel="iteration", ylabel="μ = s·y / s·s (symlog)", title="(c) curvature ratio of each pair (× = rejected)"
        )
        ax_box.set(
            xlabel="momentum coefficient β",
            ylabel="μ = s·y / s·s (symlog)",
            title="(d) distribution of μ over training (box 25–75%, whiskers 5–95%)",
        )
        ax_box.set_xlabel("momentum coefficient β, share of pairs rejected")
        handles.append(
            Line2D([], [], color="0.85", linewidth=8, label=f"damping bounds [{bounds[0]:g}, {bounds[1]:g}]")
        )
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), frameon=False)
        fig.suptitle(f"{workload}: stability of stochastic L-BFGS vs momentum β (β=0: slbfgs)")
    return fig


def stability_figures(
    runs: pd.DataFrame, curvature: pd.DataFrame | None, bounds: tuple[float, float] = DEFAULT_BOUNDS
) -> dict[str, Figure]:
    """:func:`plot_stability` for every workload of :func:`stability_workloads`."""
    return {w: plot_stability(runs, curvature, w, bounds) for w in stability_workloads(runs)}
