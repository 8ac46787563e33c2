"""Time to target against numbers computed by hand from the fixture's definition."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.intervals import mean_interval
from analysis.load import load_runs
from analysis.targets import TargetRule, same_process_ratio, time_to_target, time_to_target_markdown
from tests.support.fixtures_results import (
    ACC,
    GRAD_EVALS_PER_STEP,
    ITERS_PER_EPOCH,
    OPTIMIZERS,
    SEEDS,
    wall_s,
)


@pytest.fixture(scope="module")
def runs(results_tree: Path) -> pd.DataFrame:
    return load_runs(results_tree)


def expected_row(workload: str, optimizer: str) -> dict[str, float]:
    """Straight from the fixture's accuracy lists: target = 0.99 x mean final sgd accuracy; the first
    epoch whose accuracy reaches it, per seed."""
    target = 0.99 * sum(ACC[workload]["sgd"][s][-1] for s in SEEDS) / len(SEEDS)
    iters = []
    for s in SEEDS:
        hit = next((e + 1 for e, a in enumerate(ACC[workload][optimizer][s]) if a >= target), None)
        iters.append(None if hit is None else hit * ITERS_PER_EPOCH)
    if any(i is None for i in iters):
        return {"target": target, "reached": sum(i is not None for i in iters)}
    secs = [wall_s(optimizer, s, i) for s, i in zip(SEEDS, iters, strict=True)]
    return {
        "target": target,
        "reached": len(SEEDS),
        "iterations": sum(iters) / len(iters),
        "grad_evals": sum(iters) / len(iters) * GRAD_EVALS_PER_STEP[optimizer],
        "seconds": sum(secs) / len(secs),
    }


def _seconds(workload: str, optimizer: str, seed: int) -> float:
    """Seconds to target of one seed, straight from the fixture's definition."""
    target = expected_row(workload, "sgd")["target"]
    hit = next(e + 1 for e, a in enumerate(ACC[workload][optimizer][seed]) if a >= target)
    return wall_s(optimizer, seed, hit * ITERS_PER_EPOCH)


def test_hand_computed_values() -> None:
    # spelled out once, so that the generic check below cannot hide a wrong fixture definition
    assert expected_row("mnist1d_mlp", "mlbfgs") == pytest.approx(
        {"target": 0.891, "reached": 2, "iterations": 62.5, "grad_evals": 62.5, "seconds": (0.7875 + 0.775) / 2}
    )
    assert expected_row("mnist1d_mlp", "kfac") == pytest.approx({"target": 0.891, "reached": 1})
    assert expected_row("cifar10_resnet18", "kfac")["grad_evals"] == 75.0


@pytest.mark.parametrize("workload", ["mnist1d_mlp", "cifar10_resnet18"])
def test_time_to_target_matches_the_fixture(runs: pd.DataFrame, workload: str) -> None:
    table = time_to_target(runs)
    rows = table[table["workload"] == workload].set_index("optimizer")
    assert list(rows.index) == list(OPTIMIZERS)  # fixed display order
    sgd = expected_row(workload, "sgd")
    for optimizer in OPTIMIZERS:
        exp = expected_row(workload, optimizer)
        row = rows.loc[optimizer]
        assert row["target"] == pytest.approx(exp["target"])
        assert row["seeds"] == len(SEEDS)  # only the main mlbfgs config (beta 0.999) is counted
        assert row["seeds_reached"] == exp["reached"]
        finals = [ACC[workload][optimizer][s][-1] for s in SEEDS]  # the last evaluation of each seed
        assert (row["final"], row["final_std"]) == pytest.approx((np.mean(finals), np.std(finals, ddof=1)))
        for col in ("iterations", "grad_evals", "seconds"):
            if exp["reached"] < len(SEEDS):
                assert math.isnan(row[col])
                assert math.isnan(row[f"{col}_ratio"])
            else:
                assert row[col] == pytest.approx(exp[col])
                ratio = exp[col] / sgd[col] if col in sgd else float("nan")
                if col == "seconds":  # the fixture's runs have no manifests: each trained in a process of its
                    ratio = 1.0 if optimizer == "sgd" else float("nan")  # own, so no two runs' seconds compare
                assert row[f"{col}_ratio"] == pytest.approx(ratio, nan_ok=True)
        assert row["seconds_pairs"] == (row["seeds_reached"] if optimizer == "sgd" and sgd.get("seconds") else 0)


def test_specific_numbers(runs: pd.DataFrame) -> None:
    table = time_to_target(runs).set_index(["workload", "optimizer"])
    mlbfgs = table.loc[("mnist1d_mlp", "mlbfgs")]
    assert (mlbfgs["iterations"], mlbfgs["iterations_ratio"]) == pytest.approx((62.5, 0.625))
    assert np.isnan(mlbfgs["seconds_ratio"])  # different processes: no seconds compared
    shared = time_to_target(runs.assign(process=runs["workload"] + runs["seed"].astype(str)))
    shared = shared.set_index(["workload", "optimizer"]).loc[("mnist1d_mlp", "mlbfgs")]
    assert shared["seconds_pairs"] == 2  # one process per (workload, seed): the ratio is the median of seeds'
    per_seed = [_seconds("mnist1d_mlp", "mlbfgs", s) / _seconds("mnist1d_mlp", "sgd", s) for s in SEEDS]
    assert shared["seconds_ratio"] == pytest.approx(np.median(per_seed))
    # sgd itself does not reach the cifar target on every seed: every ratio there is undefined
    assert table.loc[("cifar10_resnet18", "sgd"), "seeds_reached"] == 1
    assert np.isnan(table.loc[("cifar10_resnet18", "mlbfgs"), "iterations_ratio"])


def test_markdown(runs: pd.DataFrame) -> None:
    table = time_to_target(runs)
    md = time_to_target_markdown(table, runs)
    assert "Target: test accuracy ≥ 0.8910, 0.99 × the final test accuracy of sgd" in md
    assert "| mlbfgs | 2/2 | 62.5 | 62.5 | 0.78 | 0.625 | 0.625 | n/a |" in md
    assert "| kfac | 1/2 | not reached | not reached | not reached | n/a | n/a | n/a |" in md
    finals = [ACC["mnist1d_mlp"]["mlbfgs"][s][-1] for s in SEEDS]
    assert "| seconds / sgd (same process) | final test accuracy [95%] |" in md
    iv = mean_interval(finals)
    assert f"| n/a | {np.mean(finals):.4f} [{iv.low:.4f}, {iv.high:.4f}] |" in md
    assert md.index("### Time to target: cifar10_resnet18") < md.index("### Time to target: mnist1d_mlp")
    assert md == time_to_target_markdown(time_to_target(runs), runs)


def test_same_process_ratio_compares_seconds_only_within_one_process() -> None:
    mine = pd.DataFrame({"seed": [0, 1, 2], "wall_s": [2.0, 3.0, 8.0], "process": ["a", "b", "x"]})
    ref = pd.DataFrame({"seed": [0, 1, 2], "wall_s": [1.0, 1.0, 1.0], "process": ["a", "b", "y"]})
    assert same_process_ratio(mine, ref) == (2.5, 2)  # seed 2 trained in another process: left out
    assert np.isnan(same_process_ratio(mine.assign(process="z"), ref)[0])


def _run(run_id: str, optimizer: str, losses: list[float], ge_per_step: int = 1) -> list[dict]:
    rows = []
    for t, loss in enumerate(losses, start=1):
        rows.append(
            {
                "run_id": run_id,
                "workload": "w",
                "optimizer": optimizer,
                "seed": 0,
                "kind": "train",
                "epoch": 0,
                "iteration": t,
                "train_loss": loss,
                "wall_s": 0.5 * t,
                "grad_evals": ge_per_step * t,
                "beta": np.nan,
            }
        )
    return rows


def test_loss_target_without_smoothing() -> None:
    # loss 1.0 for 50 iterations, then 0.1: with span 1 (no smoothing) the target 0.5 is first met at 51
    frame = pd.DataFrame(
        _run("a", "sgd", [1.0] * 50 + [0.1] * 10)
        + _run("b", "olbfgs", [1.0] * 20 + [0.1] * 40, ge_per_step=2)
        + _run("c", "olbfgs", [1.0] * 30 + [0.1] * 30, ge_per_step=2)
    )
    rule = TargetRule(metric="train_loss", value=0.5)
    table = time_to_target(frame, rule, smooth_fraction=0.0).set_index("optimizer")
    assert table.loc["sgd", "iterations"] == 51
    assert table.loc["olbfgs", "iterations"] == pytest.approx(26.0)  # mean of 21 and 31
    assert table.loc["olbfgs", "grad_evals"] == pytest.approx(52.0)
    assert table.loc["olbfgs", "seconds"] == pytest.approx(13.0)
    assert table.loc["olbfgs", "grad_evals_ratio"] == pytest.approx(52.0 / 51.0)
    # reference rule for loss: sgd's final loss / 0.99
    default = time_to_target(frame, TargetRule(metric="train_loss"), smooth_fraction=0.0)
    assert default["target"].iloc[0] == pytest.approx(0.1 / 0.99)


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="metric"):
        TargetRule(metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fraction"):
        TargetRule(fraction=1.5)


def test_reaching_includes_equality() -> None:
    rows = []
    for run_id, accs in (("a", [0.5, 0.8, 0.9]), ("b", [0.7, 0.79, 0.8])):
        for k, acc in enumerate(accs, start=1):
            rows.append(
                {
                    "run_id": run_id,
                    "workload": "w",
                    "optimizer": "sgd",
                    "seed": 0,
                    "kind": "eval",
                    "epoch": k,
                    "iteration": 10 * k,
                    "test_acc": acc,
                    "wall_s": float(k),
                    "grad_evals": 10 * k,
                    "beta": np.nan,
                }
            )
    table = time_to_target(pd.DataFrame(rows), TargetRule(value=0.8))
    assert table["iterations"].iloc[0] == pytest.approx(25.0)  # a at 20, b at 30
    assert table["seconds"].iloc[0] == pytest.approx(2.5)
