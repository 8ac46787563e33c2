"""Convergence curves: smoothed train loss and test accuracy against iterations, epochs, training
seconds and gradient evaluations, mean and spread over seeds, one figure per workload.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import PercentFormatter

from analysis.configs import with_labels
from analysis.select import MAIN_BETA, main_runs
from analysis.style import line_style, new_figure, optimizer_color, optimizer_sort_key, plain_log_ticks, styled

#: Default EMA span as a fraction of a run's train rows (2%: 1,000 iterations -> span 20).
SMOOTH_FRACTION = 0.02

#: x-axes of the convergence figure: column -> axis label.
X_AXES: dict[str, str] = {
    "iteration": "iteration",
    "epoch_progress": "epoch",
    "wall_s": "training time (s, evaluation excluded)",
    "grad_evals": "gradient evaluations (forward+backward passes)",
}

#: Most points of an interpolation grid (longer curves are resampled onto this many points).
MAX_POINTS = 400

Band = Literal["minmax", "std"]

#: Line dashes of the configurations of one optimizer, in order (then repeated).
DASHES: tuple[str | tuple[int, tuple[int, ...]], ...] = (
    "-", "--", ":", "-.", (0, (8, 2)), (0, (1, 3)), (0, (5, 1, 1, 1, 1, 1)), (0, (3, 3, 1, 3)),
)

#: Characters of legend text that fit across the convergence figure (sets the legend's columns).
LEGEND_CHARS = 150


def smoothing_span(n: int, fraction: float = SMOOTH_FRACTION) -> int:
    """EMA span for a run of ``n`` train rows: ``max(1, round(fraction * n))``."""
    return max(1, round(fraction * n))


def ema(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential moving average with ``alpha = 2 / (span + 1)`` (bias-corrected, as pandas'
    ``ewm(span).mean()``), skipping non-finite values; those positions stay NaN in the output."""
    arr = np.asarray(values, dtype=float)
    finite = np.isfinite(arr)
    smoothed = pd.Series(np.where(finite, arr, np.nan)).ewm(span=span, ignore_na=True).mean().to_numpy()
    return np.where(finite, smoothed, np.nan)


def smoothed_train(runs: pd.DataFrame, fraction: float = SMOOTH_FRACTION) -> pd.DataFrame:
    """Train rows sorted by run and iteration, with ``train_loss_smooth`` = per-run EMA of train_loss
    (span from :func:`smoothing_span`)."""
    train = runs[runs["kind"] == "train"].sort_values(["run_id", "iteration"], kind="stable").copy()
    smooth = np.full(len(train), np.nan)
    start = 0
    for _, run in train.groupby("run_id", sort=True):
        n = len(run)
        smooth[start : start + n] = ema(run["train_loss"].to_numpy(), smoothing_span(n, fraction))
        start += n
    train["train_loss_smooth"] = smooth
    return train


def evals(runs: pd.DataFrame) -> pd.DataFrame:
    """Eval rows with a test accuracy, sorted by run and iteration."""
    rows = runs[(runs["kind"] == "eval") & runs["test_acc"].notna()]
    return rows.sort_values(["run_id", "iteration"], kind="stable")


def seed_band(frame: pd.DataFrame, x: str, y: str, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Mean and spread of ``y`` against ``x`` over the runs (``run_id``) in ``frame``.

    Every run is linearly interpolated onto a common grid (the union of the x values, or
    ``max_points`` evenly spaced points when there are more) inside its own x range; rows with a
    non-finite x or y are dropped first, so a run that diverged ends where its values stop being
    finite. Returns columns x, mean, std, min, max, n (runs covering the point) and complete (all runs
    cover it), one row per grid point.
    """
    curves = []
    for _, run in frame.groupby("run_id", sort=True):
        xs = run[x].to_numpy(dtype=float)
        ys = run[y].to_numpy(dtype=float)
        ok = np.isfinite(xs) & np.isfinite(ys)
        if not ok.any():
            continue
        order = np.argsort(xs[ok], kind="stable")
        xs, ys = xs[ok][order], ys[ok][order]
        xs, last = np.unique(xs[::-1], return_index=True)  # keep the last value at a repeated x
        ys = ys[::-1][last]
        curves.append((xs, ys))
    columns = ["x", "mean", "std", "min", "max", "n", "complete"]
    if not curves:
        return pd.DataFrame(columns=columns)
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    if len(grid) > max_points:
        grid = np.linspace(grid[0], grid[-1], max_points)
    values = np.full((len(curves), len(grid)), np.nan)
    for i, (xs, ys) in enumerate(curves):
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        values[i, inside] = np.interp(grid[inside], xs, ys)
    n = np.isfinite(values).sum(axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # all-NaN columns
        out = pd.DataFrame(
            {
                "x": grid,
                "mean": np.nanmean(values, axis=0),
                "std": np.nanstd(values, axis=0),
                "min": np.nanmin(values, axis=0),
                "max": np.nanmax(values, axis=0),
                "n": n,
                "complete": n == len(curves),
            }
        )
    return out[out["n"] > 0].reset_index(drop=True)


def draw_band(
    ax: Axes,
    band_frame: pd.DataFrame,
    color: str,
    style: dict[str, float],
    band: Band = "minmax",
    label: str | None = None,
) -> Line2D | None:
    """Draw the mean line and the shaded spread of :func:`seed_band` output (points covered by every
    run only); returns the line or ``None`` when nothing is drawn."""
    full = band_frame[band_frame["complete"]]
    if full.empty:
        return None
    if band == "std":
        lo, hi = full["mean"] - full["std"], full["mean"] + full["std"]
    else:
        lo, hi = full["min"], full["max"]
    ax.fill_between(full["x"], lo, hi, color=color, alpha=0.18, linewidth=0, zorder=style["zorder"] - 1)
    (line,) = ax.plot(full["x"], full["mean"], color=color, label=label, **style)
    return line


#: The loss axes stop at this multiple of the largest initial loss (diverging curves leave the top).
LOSS_CAP = 1.5

#: gid of the markers at the end of a diverged curve.
DIVERGED_GID = "diverged"


def draw_loss(
    ax: Axes,
    band_frame: pd.DataFrame,
    color: str,
    style: dict[str, float],
    band: Band = "minmax",
    diverged: bool = False,
) -> float | None:
    """Draw a loss curve (:func:`draw_band`), marking its end with an X when a run ``diverged``;
    returns the curve's first value (for :func:`finish_loss_axis`) or ``None`` when nothing is drawn."""
    if draw_band(ax, band_frame, color, style, band) is None:
        return None
    full = band_frame[band_frame["complete"]]
    if diverged:
        (marker,) = ax.plot(
            [full["x"].iloc[-1]], [full["mean"].iloc[-1]], marker="X", markersize=9, color=color, zorder=6
        )
        marker.set_gid(DIVERGED_GID)
    return float(full["mean"].iloc[0])


def finish_loss_axis(ax: Axes, log: bool, initial: Sequence[float | None]) -> None:
    """Log scale with plain tick labels when ``log``; cap the top at :data:`LOSS_CAP` x the largest
    initial loss so that one diverging curve does not flatten the others (its X marker is pulled
    just inside the axis)."""
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
    finite = [v for v in initial if v is not None and np.isfinite(v) and (v > 0 or not log)]
    if not finite:
        return
    top = LOSS_CAP * max(finite)
    low, high = ax.get_ylim()
    if high <= top:
        return
    ax.set_ylim(low, top)
    inside = top / 1.08 if log else top - 0.03 * (top - low)
    for line in ax.get_lines():
        if line.get_gid() == DIVERGED_GID:
            line.set_ydata(np.minimum(np.asarray(line.get_ydata(), dtype=float), inside))


#: The accuracy axes start at the lowest mean accuracy after this fraction of each axis's x range (the
#: first evaluations, near chance, would otherwise squeeze curves that all end within a few points).
ACCURACY_SKIP = 0.1

#: gid and style of the target line (the time-to-target table's target) on the metric's panels.
TARGET_GID = "target"
TARGET_STYLE: dict[str, object] = {"color": "0.35", "linestyle": (0, (4, 3)), "linewidth": 1.0, "zorder": 1}


def finish_accuracy_axis(ax: Axes, target: float | None = None, skip: float = ACCURACY_SKIP) -> None:
    """Zoom the accuracy axis of ``ax`` on what its curves do after the first ``skip`` of the x range:
    from the lowest mean accuracy there (or the target, if lower) to the highest value drawn, with a 5%
    margin, never below 0. The earlier, lower part of the curves enters from the bottom."""
    xs, lows, highs = [], [], []
    for line in ax.get_lines():
        if line.get_gid() == TARGET_GID:
            continue
        x = np.asarray(line.get_xdata(), dtype=float)
        y = np.asarray(line.get_ydata(), dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            xs.append((x[ok], y[ok]))
    if not xs:
        return
    x0 = min(float(x.min()) for x, _ in xs)
    x1 = max(float(x.max()) for x, _ in xs)
    cut = x0 + skip * (x1 - x0)
    for x, y in xs:
        late = y[x >= cut]
        lows.append(float(late.min()) if len(late) else float(y[-1]))
        highs.append(float(y.max()))
    lo, hi = min(lows), max(highs)
    if target is not None and np.isfinite(target):
        lo, hi = min(lo, target), max(hi, target)
    pad = 0.05 * (hi - lo) if hi > lo else 0.01
    ax.set_ylim(max(0.0, lo - pad), hi + pad)


def draw_target(ax: Axes, target: float) -> Line2D:
    """A horizontal dashed line at ``target`` (gid :data:`TARGET_GID`)."""
    line = ax.axhline(target, **TARGET_STYLE)
    line.set_gid(TARGET_GID)
    return line


def diverged_runs(train: pd.DataFrame) -> set[str]:
    """Run ids whose train loss is non-finite at some iteration."""
    bad = train[~np.isfinite(train["train_loss"].to_numpy(dtype=float))]
    return set(bad["run_id"])


def _positive(values: pd.Series) -> bool:
    v = values.to_numpy(dtype=float)
    v = v[np.isfinite(v)]
    return bool(len(v)) and bool((v > 0).all())


def plot_curve_grid(
    train: pd.DataFrame,
    ev: pd.DataFrame,
    groups: Sequence[str],
    group_col: str,
    color_of: Callable[[str], str],
    style_of: Callable[[str], dict[str, float]],
    label_of: Callable[[str], str],
    x_axes: dict[str, str],
    band: Band,
    title: str,
    target: tuple[str, float] | None = None,
) -> Figure:
    """Figure with a row for the smoothed train loss and a row for the test accuracy, one column per
    x-axis in ``x_axes``, one curve per value of ``group_col`` (mean over runs with a shaded band).

    ``target``: ``(metric, value)`` of the time-to-target table (metric "test_acc" or "train_loss"),
    drawn as a dashed line on that metric's panels. The accuracy panels are zoomed by
    :func:`finish_accuracy_axis`."""
    with styled():
        ncols = len(x_axes)
        fig, axes = new_figure(2, ncols, 4.2 * ncols, 7.6)
        loss_axes, acc_axes = axes[:ncols], axes[ncols:]
        log_loss = _positive(train["train_loss_smooth"]) if len(train) else False
        handles: list[Line2D] = []
        initial: dict[int, list[float | None]] = {i: [] for i in range(ncols)}
        for name in groups:
            color, style = color_of(name), style_of(name)
            tr = train[train[group_col] == name]
            ev_g = ev[ev[group_col] == name]
            broken = diverged_runs(tr)
            for i, (ax, x) in enumerate(zip(loss_axes, x_axes, strict=True)):
                band_frame = seed_band(tr, x, "train_loss_smooth")
                initial[i].append(draw_loss(ax, band_frame, color, style, band, bool(broken)))
            for ax, x in zip(acc_axes, x_axes, strict=True):
                draw_band(ax, seed_band(ev_g, x, "test_acc"), color, style, band)
            n_runs = tr["run_id"].nunique() or ev_g["run_id"].nunique()
            label = f"{label_of(name)} ({n_runs} seed{'s' if n_runs != 1 else ''})"
            if broken:
                label += f", non-finite loss in {len(broken)}"
            handles.append(Line2D([], [], color=color, label=label, **style))
        for i, (ax, (x, xlabel)) in enumerate(zip(loss_axes, x_axes.items(), strict=True)):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("train loss (EMA-smoothed)")
            ax.set_title(f"train loss vs {_short(x)}")
            finish_loss_axis(ax, log_loss, initial[i])
            if target is not None and target[0] == "train_loss":
                draw_target(ax, target[1])
        acc_target = target[1] if target is not None and target[0] == "test_acc" else None
        for ax, (x, xlabel) in zip(acc_axes, x_axes.items(), strict=True):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"test accuracy vs {_short(x)}")
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
            finish_accuracy_axis(ax, acc_target)
            if acc_target is not None:
                draw_target(ax, acc_target)
        if target is not None:
            metric = "test accuracy" if target[0] == "test_acc" else "train loss"
            handles.append(Line2D([], [], label=f"target ({metric} {target[1]:.4g}, time-to-target table)",
                                  **TARGET_STYLE))
        spread = "min–max over seeds" if band == "minmax" else "±1 std over seeds"
        fig.suptitle(f"{title}\nline: mean over seeds, band: {spread}; × marks a run whose loss became non-finite")
        if handles:
            widest = max(len(h.get_label()) for h in handles) + 6
            ncols = max(1, min(len(handles), 5, LEGEND_CHARS // widest))
            fig.legend(handles=handles, loc="outside lower center", ncols=ncols, frameon=False)
    return fig


def _short(x: str) -> str:
    return {"iteration": "iteration", "epoch_progress": "epoch", "wall_s": "time", "grad_evals": "grad evals"}.get(x, x)


def plot_convergence(
    runs: pd.DataFrame,
    workload: str,
    band: Band = "minmax",
    smooth_fraction: float = SMOOTH_FRACTION,
    main_beta: float = MAIN_BETA,
    target: tuple[str, float] | None = None,
) -> Figure:
    """Convergence figure of one workload: every optimizer of the main comparison (see
    :func:`analysis.select.main_runs`), train loss (EMA, span = ``smooth_fraction`` of the run) and
    test accuracy vs iteration, epoch, training seconds and gradient evaluations; ``target``
    (``(metric, value)``) is drawn as a dashed line."""
    data = main_runs(runs[runs["workload"] == workload], main_beta)
    if data.empty:
        raise ValueError(f"workload {workload!r} has no runs; known: {', '.join(sorted(runs['workload'].unique()))}")
    return plot_configurations(data, band, smooth_fraction, f"{workload}: convergence", target)


def plot_configurations(
    data: pd.DataFrame,
    band: Band = "minmax",
    smooth_fraction: float = SMOOTH_FRACTION,
    title: str = "convergence",
    target: tuple[str, float] | None = None,
) -> Figure:
    """The convergence grid of ``data`` (rows of :func:`analysis.load.load_runs`): one curve per
    configuration (:mod:`analysis.configs`; runs differing only in the seed share a curve), labelled
    with the settings that tell it apart, coloured by optimizer, configurations of one optimizer told
    apart by the line's dashes."""
    data = with_labels(data)
    train = smoothed_train(data, smooth_fraction)
    ev = evals(data)
    first = data.drop_duplicates("label")
    optimizer_of = dict(zip(first["label"], first["optimizer"], strict=True))
    labels = sorted(optimizer_of, key=lambda lab: (optimizer_sort_key(optimizer_of[lab]), lab))
    dashes = {}
    for lab in labels:
        same = [other for other in labels if optimizer_of[other] == optimizer_of[lab]]
        dashes[lab] = DASHES[same.index(lab) % len(DASHES)]
    span = smoothing_span(int(train.groupby("run_id").size().median()) if len(train) else 1, smooth_fraction)
    return plot_curve_grid(
        train,
        ev,
        labels,
        "label",
        lambda lab: optimizer_color(optimizer_of[lab]),
        lambda lab: {**line_style(optimizer_of[lab]), "linestyle": dashes[lab]},
        str,
        X_AXES,
        band,
        f"{title} (train loss EMA span {span} iterations)",
        target,
    )


def workloads(runs: pd.DataFrame) -> list[str]:
    """Workload names, sorted."""
    return sorted(runs["workload"].dropna().unique())


def convergence_figures(
    runs: pd.DataFrame,
    band: Band = "minmax",
    smooth_fraction: float = SMOOTH_FRACTION,
    targets: Mapping[str, tuple[str, float]] | None = None,
) -> dict[str, Figure]:
    """:func:`plot_convergence` for every workload, keyed by workload name (sorted); ``targets`` maps a
    workload to its ``(metric, value)`` target line."""
    targets = targets or {}
    return {w: plot_convergence(runs, w, band, smooth_fraction, target=targets.get(w)) for w in workloads(runs)}
