"""Performance profiles and the AlgoPerf-style targets, against hand-computed values."""

import numpy as np
import pandas as pd
import pytest

from analysis.profiles import plot_profiles, profile, profile_markdown, profile_summary, ratios
from analysis.targets import TargetRule, targets_from_trials, time_to_target

TABLE = pd.DataFrame([
    # workload, optimizer, seeds, iterations, seconds
    ("w1", "sgd", 3, 100.0, 10.0), ("w1", "adam", 3, 200.0, 5.0), ("w1", "mlbfgs", 3, np.nan, np.nan),
    ("w2", "sgd", 3, 300.0, 30.0), ("w2", "adam", 3, np.nan, np.nan), ("w2", "mlbfgs", 3, 150.0, 60.0),
    ("w3", "sgd", 3, np.nan, np.nan), ("w3", "adam", 3, np.nan, np.nan), ("w3", "mlbfgs", 3, np.nan, np.nan),
], columns=["workload", "optimizer", "seeds", "iterations", "seconds"])


def test_ratios_to_the_fastest_with_unreached_as_infinite() -> None:
    r = ratios(TABLE, "iterations")
    assert list(r.columns) == ["w1", "w2"]  # nobody reached w3's target: left out
    assert r.loc["sgd", "w1"] == 1.0 and r.loc["adam", "w1"] == 2.0 and np.isinf(r.loc["mlbfgs", "w1"])
    assert r.loc["mlbfgs", "w2"] == 1.0 and r.loc["sgd", "w2"] == 2.0 and np.isinf(r.loc["adam", "w2"])
    rho = profile(r, np.array([1.0, 2.0, 4.0]))
    assert rho.loc["sgd"].tolist() == [0.5, 1.0, 1.0]
    assert rho.loc["adam"].tolist() == [0.0, 0.5, 0.5]
    assert rho.loc["mlbfgs"].tolist() == [0.5, 0.5, 0.5]
    seconds = ratios(TABLE, "seconds")
    assert seconds.loc["adam", "w1"] == 1.0 and seconds.loc["sgd", "w1"] == 2.0
    with pytest.raises(ValueError, match="measure must be one of"):
        ratios(TABLE, "grad evals")


def test_seconds_compare_only_through_same_process_ratios_to_sgd() -> None:
    # raw seconds favour adam on w1 (5 against 10), but adam never shared a process with sgd there:
    # its seconds are not compared ('–', not within any tau); mlbfgs on w2 ran beside sgd at 1.5 x its time
    table = TABLE.assign(seconds_ratio=[1.0, np.nan, np.nan, 1.0, np.nan, 1.5, np.nan, np.nan, np.nan])
    r = ratios(table, "seconds")
    assert r.loc["sgd", "w1"] == 1.0 and np.isnan(r.loc["adam", "w1"]) and np.isinf(r.loc["mlbfgs", "w1"])
    assert r.loc["sgd", "w2"] == 1.0 and r.loc["mlbfgs", "w2"] == 1.5 and np.isinf(r.loc["adam", "w2"])
    assert profile(r, np.array([4.0])).loc["adam"].tolist() == [0.0]
    assert "| adam | – | inf |" in profile_markdown(profile_summary(table))


def test_summary_markdown_and_figure() -> None:
    summary = profile_summary(TABLE)
    md = profile_markdown(summary)
    assert "| sgd | 1.00 | 2.00 | 0.50 | 0.50 | 1.00 | 1.00 |" in md
    assert "| adam | 2.00 | inf |" in md
    assert len(plot_profiles(TABLE).axes) == 2


def _runs() -> pd.DataFrame:
    rows = []
    for opt, curves in {"sgd": [[0.5, 0.8, 0.9], [0.5, 0.7, 0.9], [0.4, 0.6, 0.7]],
                        "adam": [[0.9, 0.9, 0.9], [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]]}.items():
        for seed, accs in enumerate(curves):
            for i, acc in enumerate(accs):
                rows.append({"workload": "w", "optimizer": opt, "seed": seed, "run_id": f"{opt}{seed}",
                             "kind": "eval", "iteration": 10 * (i + 1), "grad_evals": 10 * (i + 1),
                             "wall_s": float(i + 1), "test_acc": acc, "train_loss": np.nan, "beta": np.nan})
    return pd.DataFrame(rows)


def test_median_over_seeds_counts_unreached_as_infinite() -> None:
    trials = pd.DataFrame({"workload": ["w", "w"], "final_test_acc": [0.85, 0.8]})
    rule = targets_from_trials(trials, fraction=1.0)
    assert rule.fixed_for("w") == pytest.approx(0.85) and rule.aggregate == "median"
    table = time_to_target(_runs(), rule).set_index("optimizer")
    assert table.loc["sgd", "iterations"] == 30.0  # reached at 20, 30, never -> median 30
    assert table.loc["sgd", "seeds_reached"] == 2
    assert np.isnan(table.loc["adam", "iterations"])  # 1 of 3 seeds: median is infinite
    mean_rule = TargetRule(value=0.85)
    assert np.isnan(time_to_target(_runs(), mean_rule).set_index("optimizer").loc["sgd", "iterations"])


def test_no_workload_reached_gives_empty_profiles_not_an_error() -> None:
    table = TABLE[TABLE["workload"] == "w3"]
    assert ratios(table, "iterations").shape[1] == 0
    summary = profile_summary(table)
    assert summary["rho@1"].isna().all()
    assert "| sgd |" in profile_markdown(summary)
    assert len(plot_profiles(table).axes) == 2
