"""Overhead medians and ratios; distributed per-rank memory against the 1/N ideal."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.load import load_results
from analysis.overhead import overhead_markdown, overhead_summary, plot_overhead
from analysis.scaling import MIB, plot_scaling, scaling_markdown, scaling_summary
from tests.support.fixtures_results import (
    DIST_BYTES,
    OPTIMIZERS,
    OVERHEAD_MEDIAN_S,
    OVERHEAD_MODELS,
)


@pytest.fixture(scope="module")
def data(results_tree: Path):
    return load_results(results_tree)


def test_overhead_medians_and_ratios(data) -> None:
    summary = overhead_summary(data.overhead).set_index(["model", "measure", "optimizer"])
    for model in OVERHEAD_MODELS:
        for measure in ("step", "iteration"):
            sgd = OVERHEAD_MEDIAN_S[model][measure]["sgd"]
            for optimizer in OPTIMIZERS:
                row = summary.loc[(model, measure, optimizer)]
                median = OVERHEAD_MEDIAN_S[model][measure][optimizer]
                assert row["median_s"] == pytest.approx(median)
                assert row["ratio"] == pytest.approx(median / sgd)
                assert row["repeats"] == 5


def test_overhead_table_and_figure(data) -> None:
    summary = overhead_summary(data.overhead)
    md = overhead_markdown(summary)
    assert "| mlp | mlbfgs | 1.300 | 1.30 | 10.300 | 1.03 |" in md
    assert "| resnet18 | kfac | 200.000 | 20.00 | 290.000 | 2.90 |" in md
    assert md.index("| mlp | sgd |") < md.index("| mlp | mlbfgs |") < md.index("| resnet18 | sgd |")
    fig = plot_overhead(summary)
    labels = {t.get_text() for ax in fig.get_axes() for t in ax.texts}
    assert {"20.00×", "1.10×", "1.01×"} <= labels
    assert [ax.get_yscale() for ax in fig.get_axes()] == ["log", "log"]


def test_overhead_ratio_is_nan_without_sgd(data) -> None:
    summary = overhead_summary(data.overhead[data.overhead["optimizer"] != "sgd"])
    assert summary["ratio"].isna().all()
    assert "n/a" in overhead_markdown(summary)


def test_scaling_summary(data) -> None:
    summary = scaling_summary(data.distributed).set_index("world_size")
    total = sum(DIST_BYTES[1])
    for n, per_rank in DIST_BYTES.items():
        row = summary.loc[n]
        assert row["ranks"] == n
        assert row["max_curvature_bytes"] == max(per_rank)
        assert row["ideal_curvature_bytes"] == pytest.approx(total / n)
        assert row["memory_efficiency"] == pytest.approx(total / n / max(per_rank))
        assert row["blocks"] == 8
    assert summary.loc[4, "max_direction_seconds"] == pytest.approx(0.02 / 4 * 1.15)
    assert summary.loc[4, "ideal_direction_seconds"] == pytest.approx(0.02 / 4)
    md = scaling_markdown(scaling_summary(data.distributed))
    assert f"| resnet18 | 4 | 8 | {1_100_000 / MIB:.3f} |" in md


def test_scaling_repeats_use_the_median(data) -> None:
    doubled = data.distributed.copy()
    doubled["curvature_bytes"] = doubled["curvature_bytes"] * 3
    import pandas as pd

    summary = scaling_summary(pd.concat([data.distributed, data.distributed, doubled]))
    assert summary.set_index("world_size").loc[2, "max_curvature_bytes"] == 2_100_000


def test_scaling_figure(data) -> None:
    fig = plot_scaling(data.distributed)
    ax_mem, ax_dir = fig.get_axes()
    assert ax_mem.get_xscale() == "log" and ax_mem.get_yscale() == "log"
    assert "MiB" in ax_mem.get_ylabel() and "ms" in ax_dir.get_ylabel()
    labels = [t.get_text() for t in ax_mem.get_legend().get_texts()]
    assert "resnet18: ideal 1/N" in labels
