"""The ResNet diagnosis: which configuration of mL-BFGS recovers the accuracy, and where its step goes.

Runs of ``<results>/resnet_diagnosis/runs`` (``python -m experiments.suite --preset resnet_diagnosis``),
one configuration per optimizer settings (:func:`analysis.variants.load_variant_runs`), with the
per-block diagnostics of their curvature CSVs (``mlbfgs.PairRecord``: raw and damped mu, gamma,
``|g_b|`` and the block's share of ``|d|^2`` before the rescaling, at every pair step).

Table: per configuration, the final test accuracy with its 95% interval (:mod:`analysis.intervals`),
its difference to the reference configuration (``sgd_normalized``) with the interval and the verdict,
and per-block figures pooled over seeds and pair steps: the blocks, the median spread of the damped
mu across blocks within a pair step (max / min), and the last block's (the classifier's) median share
of the step and of the gradient. Figure: each block's share of the step beside its share of the
gradient ``|g_b|^2 / |g|^2`` over training (seed 0), one row per configuration with several blocks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.intervals import difference_interval, mean_interval, verdict
from analysis.load import CURVATURE_COLUMNS, CURVATURE_DIAGNOSTICS, read_curvature_csv
from analysis.style import new_figure, styled
from analysis.tables import fmt, markdown_table
from analysis.variants import load_variant_runs

FOLDER = "resnet_diagnosis"
REFERENCE = "sgd_normalized"  # the paper's own SGD: the direction mL-BFGS falls back to without curvature


def load_diagnosis(root: Path | str, folder: str = FOLDER) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(runs, pairs): one row per finished run (:func:`analysis.variants.load_variant_runs`) and the
    curvature rows of those runs with their ``variant`` and ``seed``; None without finished runs."""
    runs = load_variant_runs(root, folder)
    if runs is None:
        return None
    frames = []
    for manifest_path in sorted((Path(root) / folder / "runs").glob("*/*.json")):
        manifest = json.loads(manifest_path.read_text())
        run_id = manifest_path.stem
        path = manifest_path.with_name(run_id + ".curvature.csv")
        if manifest.get("status") != "finished" or not path.is_file():
            continue
        df = read_curvature_csv(path)
        config = json.dumps(manifest.get("optimizer_config", {}), sort_keys=True, default=str)
        match = runs[(runs["config"] == config) & (runs["seed"] == int(manifest["seed"]))
                     & (runs["workload"] == manifest["workload"])]
        df["variant"] = match["variant"].iloc[0] if len(match) else manifest["optimizer"]
        df["seed"] = int(manifest["seed"])
        df["workload"] = manifest["workload"]
        df["block"] = df["block"].astype(int)
        frames.append(df)
    pairs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=[*CURVATURE_COLUMNS, *CURVATURE_DIAGNOSTICS, "variant", "seed", "workload"])
    return runs, pairs


def _per_step(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per (variant, seed, pair step): spread of the damped mu across blocks, the last block's
    share of the step and of the gradient."""
    rows = []
    for (variant, seed, it), step in pairs.groupby(["variant", "seed", "iteration"], sort=True):
        step = step.sort_values("block")
        damped = step["damped_mu"].dropna()
        damped = damped[damped > 0]
        g2 = step["grad_norm"] ** 2
        last = step.iloc[-1]
        rows.append({"variant": variant, "seed": seed, "iteration": it, "blocks": len(step),
                     "spread": float(damped.max() / damped.min()) if len(damped) > 1 else 1.0,
                     "last_step_share": float(last["direction_share"]),
                     "last_grad_share": float(last["grad_norm"] ** 2 / g2.sum()) if g2.sum() > 0 else np.nan})
    return pd.DataFrame(rows)


def diagnosis_summary(data: tuple[pd.DataFrame, pd.DataFrame], reference: str = REFERENCE) -> pd.DataFrame:
    """One row per (workload, configuration): seeds, final test accuracy with its 95% interval, the
    difference to ``reference`` with its interval and verdict, final train loss, and the per-block
    figures of the module docstring (empty for optimizers without pairs)."""
    runs, pairs = data
    steps = _per_step(pairs) if len(pairs) else pd.DataFrame(columns=["variant"])
    rows = []
    for (workload, variant), sub in runs.groupby(["workload", "variant"], sort=True):
        acc = mean_interval(sub["final_test_acc"].tolist())
        # the reference is an optimizer, whatever settings label its variant (e.g. its tuned momentum)
        ref = runs[(runs["workload"] == workload) & (runs["optimizer"] == reference)]["final_test_acc"].tolist()
        diff = difference_interval(sub["final_test_acc"].tolist(), ref)
        mine = steps[steps["variant"] == variant]
        rows.append({
            "workload": workload, "configuration": variant, "optimizer": sub["optimizer"].iloc[0],
            "seeds": int(sub["seed"].nunique()),
            "final_test_acc": acc.value, "final_test_acc_low": acc.low, "final_test_acc_high": acc.high,
            "delta_vs_reference": diff.value, "delta_low": diff.low, "delta_high": diff.high,
            "verdict": verdict(diff) if sub["optimizer"].iloc[0] != reference and ref else "",
            "final_train_loss": float(sub["final_train_loss"].mean()),
            "blocks": int(mine["blocks"].max()) if len(mine) else 0,
            "damped_mu_spread_median": float(mine["spread"].median()) if len(mine) else np.nan,
            "last_block_step_share_median": float(mine["last_step_share"].median()) if len(mine) else np.nan,
            "last_block_grad_share_median": float(mine["last_grad_share"].median()) if len(mine) else np.nan,
        })
    out = pd.DataFrame(rows)
    out = out.sort_values(["workload", "final_test_acc"], ascending=[True, False], kind="stable")
    return out.reset_index(drop=True)


def diagnosis_markdown(summary: pd.DataFrame, reference: str = REFERENCE) -> str:
    caption = (
        "Each row one configuration over its seeds. Final test accuracy: the last evaluation, mean with its "
        "95% interval (`analysis/intervals.py`: the union of the percentile bootstrap and Student's t). "
        f"'vs {reference}': the difference of the means with its 95% interval; 'better'/'worse' only where "
        "the interval excludes zero, else 'level'. Per-block columns, pooled over seeds and pair steps: the "
        "median over pair steps of max/min damped mu across blocks ('mu spread'), and the last block's "
        "(the classifier's) median share of the step (|d_b|^2/|d|^2 before the rescaling) and of the "
        "gradient (|g_b|^2/|g|^2).\n"
    )
    header = ["workload", "configuration", "seeds", "final test acc [95%]", f"vs {reference} [95%]", "",
              "final train loss", "blocks", "mu spread", "classifier step share", "classifier grad share"]
    body = []
    for r in summary.itertuples():
        delta = "–" if not np.isfinite(r.delta_vs_reference) or r.optimizer == reference else (
            f"{r.delta_vs_reference:+.4f} [{r.delta_low:+.4f}, {r.delta_high:+.4f}]")
        body.append([r.workload, f"`{r.configuration}`", str(r.seeds),
                     f"{fmt(r.final_test_acc, 4)} [{fmt(r.final_test_acc_low, 4)}, {fmt(r.final_test_acc_high, 4)}]",
                     delta, r.verdict, fmt(r.final_train_loss, 4), str(r.blocks) if r.blocks else "–",
                     fmt(r.damped_mu_spread_median, 1), fmt(r.last_block_step_share_median, 4),
                     fmt(r.last_block_grad_share_median, 4)])
    return caption + "\n" + markdown_table(header, body, "llrrrlrrrrr")


def plot_block_shares(data: tuple[pd.DataFrame, pd.DataFrame], summary: pd.DataFrame) -> Figure:
    """Per configuration with several blocks (rows), seed 0: each block's share of the step (left) and
    of the gradient (right) at every pair step, on one logarithmic colour scale."""
    _, pairs = data
    multi = [v for v in summary["configuration"] if len(pairs) and
             pairs[pairs["variant"] == v]["block"].nunique() > 1]
    with styled():
        fig, axes = new_figure(max(1, len(multi)), 2, 12.0, 1.2 + 2.2 * max(1, len(multi)))
        norm = LogNorm(vmin=1e-5, vmax=1.0)
        image = None
        for row, variant in enumerate(multi):
            sub = pairs[pairs["variant"] == variant]
            sub = sub[sub["seed"] == sub["seed"].min()].copy()
            g2 = sub.groupby("iteration")["grad_norm"].transform(lambda v: v ** 2 / (v ** 2).sum())
            sub["grad_share"] = g2
            for col, (column, what) in enumerate((("direction_share", "step"), ("grad_share", "gradient"))):
                ax = axes[2 * row + col]
                grid = sub.pivot_table(index="block", columns="iteration", values=column)
                its = grid.columns.to_numpy()
                image = ax.imshow(grid.clip(lower=1e-5).to_numpy(), aspect="auto", norm=norm, cmap="viridis",
                                  extent=(float(its.min()), float(its.max()), grid.index.max() + 0.5, -0.5),
                                  interpolation="nearest")
                ax.set_ylabel("block (input → classifier)")
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # blocks are whole numbers
                ax.set_title(f"{variant}\nshare of the {what}", fontsize=8)
                ax.set_xlabel("iteration")
        if not multi:
            axes[0].text(0.5, 0.5, "no configuration with several blocks", ha="center", va="center")
        if image is not None:
            fig.colorbar(image, ax=axes, shrink=0.6, label="share of |·|² (seed 0)")
        fig.suptitle("Where mL-BFGS's step goes: each block's share of the step beside its share of the gradient")
    return fig
