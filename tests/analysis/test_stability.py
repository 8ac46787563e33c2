"""Beta ablation: curvature statistics and the stability figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analysis.load import load_results
from analysis.stability import plot_stability, stability_markdown, stability_summary, stability_workloads
from tests.support.fixtures_results import (
    DIVERGE_AT,
    EPOCHS,
    ITERS_PER_EPOCH,
    PAIR_PERIOD,
    REJECTED_FRACTION,
    SEEDS,
    curvature_mu,
)


@pytest.fixture(scope="module")
def data(results_tree: Path):
    return load_results(results_tree)


def fixture_mu(beta: float) -> np.ndarray:
    """Every mu the fixture writes for ``beta`` (two blocks per pair, all seeds)."""
    last = DIVERGE_AT if beta == 0 else EPOCHS * ITERS_PER_EPOCH
    n = 2 * len(range(PAIR_PERIOD, last + 1, PAIR_PERIOD))
    return np.array([curvature_mu(beta, k + s) for s in SEEDS for k in range(n)])


def test_summary(data) -> None:
    summary = stability_summary(data.runs, data.curvature)
    assert stability_workloads(data.runs) == ["cifar10_resnet18", "mnist1d_mlp"]
    mnist = summary[summary["workload"] == "mnist1d_mlp"].set_index("beta")
    assert list(mnist.index) == [0.0, 0.9, 0.99, 0.999]
    for beta, row in mnist.iterrows():
        mu = fixture_mu(beta)
        assert row["pairs"] == len(mu)
        assert row["rejected_fraction"] == pytest.approx(REJECTED_FRACTION[beta])
        assert row["mu_median"] == pytest.approx(np.median(mu))
        assert row["mu_q10"] == pytest.approx(np.quantile(mu, 0.1))
        assert row["mu_negative_fraction"] == pytest.approx(np.mean(mu < 0))
        assert row["mu_outside_bounds_fraction"] == pytest.approx(np.mean((mu < 0.01) | (mu > 1.5)))
        assert row["runs"] == len(SEEDS)
    assert mnist.loc[0.0, "nonfinite_runs"] == len(SEEDS) and np.isnan(mnist.loc[0.0, "final_train_loss"])
    assert mnist.loc[0.999, "nonfinite_runs"] == 0 and np.isfinite(mnist.loc[0.999, "final_train_loss"])
    assert mnist.loc[0.9, "final_test_acc"] == pytest.approx(0.88)
    md = stability_markdown(summary)
    assert "| mnist1d_mlp | 0 | 2 | 2 | non-finite |" in md
    assert "| mnist1d_mlp | 0.9 | 2 | 0 |" in md


def test_figure(data) -> None:
    fig = plot_stability(data.runs, data.curvature, "mnist1d_mlp")
    ax_loss, ax_acc, ax_mu, ax_box = fig.get_axes()
    assert ax_mu.get_yscale() == "symlog" and ax_box.get_yscale() == "symlog"
    ticks = [t.get_text() for t in ax_box.get_xticklabels()]
    assert ticks[0].startswith("β=0\nrejected 25.0%")
    assert ticks[1].startswith("β=0.9\nrejected 5.0%")
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:4] == ["β=0 (2 seeds)", "β=0.9 (2 seeds)", "β=0.99 (2 seeds)", "β=0.999 (2 seeds)"]
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in (ax_loss, ax_acc, ax_mu, ax_box))


def test_figure_without_curvature(data) -> None:
    fig = plot_stability(data.runs, None, "cifar10_resnet18")
    texts = [t.get_text() for ax in fig.get_axes() for t in ax.texts]
    assert "no curvature CSVs" in texts
