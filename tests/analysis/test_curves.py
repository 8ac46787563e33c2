"""Convergence curves: smoothing, seed aggregation, run selection and the figure's content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from analysis.curves import (
    TARGET_GID,
    X_AXES,
    diverged_runs,
    ema,
    finish_accuracy_axis,
    plot_convergence,
    seed_band,
    smoothed_train,
)
from analysis.load import load_runs
from analysis.select import chosen_beta, main_runs
from analysis.style import OPTIMIZER_COLORS, optimizer_color
from tests.support.fixtures_results import DIVERGE_AT, OPTIMIZERS


@pytest.fixture(scope="module")
def runs(results_tree: Path) -> pd.DataFrame:
    return load_runs(results_tree)


def test_ema_matches_the_weighted_mean_and_skips_non_finite() -> None:
    x = np.array([1.0, np.nan, 3.0, np.inf, 5.0])
    out = ema(x, span=3)  # alpha = 0.5, weights (1 - alpha)^k over the finite values seen so far
    assert out[0] == 1.0
    assert np.isnan(out[1]) and np.isnan(out[3])
    assert out[2] == pytest.approx((0.5 * 1 + 3) / 1.5)
    assert out[4] == pytest.approx((0.25 * 1 + 0.5 * 3 + 5) / 1.75)
    assert np.array_equal(ema(np.array([2.0, 4.0]), span=1), [2.0, 4.0])


def test_seed_band_on_hand_made_runs() -> None:
    frame = pd.DataFrame(
        {
            "run_id": ["a"] * 3 + ["b"] * 2,
            "x": [0.0, 1.0, 2.0, 0.0, 3.0],
            "y": [0.0, 2.0, 4.0, 2.0, 2.0],
        }
    )
    band = seed_band(frame, "x", "y").set_index("x")
    assert list(band.index) == [0.0, 1.0, 2.0, 3.0]
    assert band.loc[1.0, ["mean", "min", "max", "n"]].tolist() == [2.0, 2.0, 2.0, 2]
    assert band.loc[2.0, ["mean", "min", "max"]].tolist() == [3.0, 2.0, 4.0]
    assert band.loc[2.0, "std"] == pytest.approx(1.0)
    assert band.loc[3.0, "n"] == 1 and not band.loc[3.0, "complete"]
    assert band.loc[0.0, "complete"]


def test_seed_band_resamples_long_runs() -> None:
    x = np.arange(1000.0)
    frame = pd.DataFrame({"run_id": "a", "x": x, "y": 2 * x})
    band = seed_band(frame, "x", "y", max_points=50)
    assert len(band) == 50
    assert np.allclose(band["mean"], 2 * band["x"])


def test_diverged_run_ends_where_its_loss_stops_being_finite(runs: pd.DataFrame) -> None:
    train = smoothed_train(runs[runs["optimizer"] == "slbfgs"])
    assert diverged_runs(train) == set(train["run_id"])
    band = seed_band(train[train["workload"] == "mnist1d_mlp"], "iteration", "train_loss_smooth")
    assert band["x"].max() == DIVERGE_AT - 1


def test_main_runs_keep_one_mlbfgs_configuration(runs: pd.DataFrame) -> None:
    main = main_runs(runs)
    mlbfgs = main[(main["optimizer"] == "mlbfgs") & (main["workload"] == "mnist1d_mlp")]
    assert set(np.round(mlbfgs["beta"], 6)) == {0.999}
    assert mlbfgs["run_id"].nunique() == 2
    assert chosen_beta(pd.Series([0.9, 0.9, 0.99])) == 0.9
    assert chosen_beta(pd.Series([0.9, 0.99])) == 0.99
    assert chosen_beta(pd.Series([np.nan])) is None


def test_convergence_figure(runs: pd.DataFrame) -> None:
    fig = plot_convergence(runs, "mnist1d_mlp")
    axes = fig.get_axes()
    assert len(axes) == 2 * len(X_AXES)
    xlabels = [ax.get_xlabel() for ax in axes[: len(X_AXES)]]
    assert xlabels == list(X_AXES.values())
    assert any("(s" in label for label in xlabels)  # seconds carry their unit
    assert all(ax.get_ylabel() for ax in axes) and all(ax.get_title() for ax in axes)
    legend_labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [label.split(" ")[0] for label in legend_labels] == list(OPTIMIZERS)
    assert "mlbfgs (2 seeds)" in legend_labels  # the beta ablation runs are not mixed in
    assert any(label.startswith("slbfgs") and "non-finite" in label for label in legend_labels)
    # one colour per optimizer, the same in every panel; mlbfgs is drawn thickest
    for ax in axes:
        widths = {}
        for line in ax.get_lines():
            if line.get_linestyle() == "-" and len(line.get_xdata()) > 1:
                widths[to_hex(line.get_color())] = line.get_linewidth()
        assert set(widths) == {optimizer_color(o) for o in OPTIMIZERS}
        assert widths[OPTIMIZER_COLORS["mlbfgs"]] == max(widths.values())


def test_accuracy_axis_zooms_on_the_curves_after_their_first_evaluations() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    x = np.arange(0.0, 101.0, 5.0)
    ax.plot(x, np.where(x < 10, 0.1, 0.90 + 0.0003 * x))  # chance at first, then 0.90 to 0.93
    ax.plot(x, np.where(x < 5, 0.05, 0.88))
    finish_accuracy_axis(ax)
    low, high = ax.get_ylim()
    assert 0.85 < low < 0.88 and 0.93 < high < 0.96  # the chance-level start is left below the axis
    finish_accuracy_axis(ax, target=0.8)
    assert 0.75 < ax.get_ylim()[0] < 0.8  # the target stays visible
    ax.plot([0.0, 100.0], [0.0, 0.0])  # a curve that never learns keeps the axis at 0
    finish_accuracy_axis(ax)
    assert ax.get_ylim()[0] == 0.0
    plt.close(fig)


@pytest.mark.parametrize("metric", ["test_acc", "train_loss"])
def test_the_target_is_drawn_on_its_metrics_panels(runs: pd.DataFrame, metric: str) -> None:
    value = 0.6 if metric == "test_acc" else 0.3
    fig = plot_convergence(runs, "mnist1d_mlp", target=(metric, value))
    axes = fig.get_axes()
    loss_axes, acc_axes = axes[: len(X_AXES)], axes[len(X_AXES):]
    with_target = acc_axes if metric == "test_acc" else loss_axes
    for ax in axes:
        lines = [line for line in ax.get_lines() if line.get_gid() == TARGET_GID]
        if ax in with_target:
            assert len(lines) == 1 and list(lines[0].get_ydata()) == [value, value]
            assert ax.get_ylim()[0] <= value <= ax.get_ylim()[1]
        else:
            assert not lines
    assert any(t.get_text().startswith("target") for t in fig.legends[0].get_texts())
    plain = plot_convergence(runs, "mnist1d_mlp")
    assert not any(line.get_gid() == TARGET_GID for ax in plain.get_axes() for line in ax.get_lines())


def test_unknown_optimizer_colour_is_stable() -> None:
    assert optimizer_color("newopt") == optimizer_color("newopt")
    assert optimizer_color("newopt") not in OPTIMIZER_COLORS.values()


def test_unknown_workload_is_an_error(runs: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="nope"):
        plot_convergence(runs, "nope")


@pytest.mark.parametrize("limits, labels", [
    ((1e-4, 3.0), ["0.0001", "0.001", "0.01", "0.1", "1"]),  # 4.5 decades: decades only, no collisions
    ((0.01, 0.5), ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5"]),  # 1.7 decades: 1-2-5
])
def test_plain_log_ticks_thin_out_on_wide_spans(limits, labels) -> None:
    from analysis.style import new_figure, plain_log_ticks

    fig, axes = new_figure(1, 1, 5.5, 4.2)
    ax = axes[0]
    ax.set_xscale("log")
    ax.set_xlim(*limits)
    plain_log_ticks(ax.xaxis)
    fig.canvas.draw()
    shown = [t.get_text() for t, v in zip(ax.get_xticklabels(), ax.get_xticks(), strict=True)
             if limits[0] <= v <= limits[1]]
    assert shown == labels
