"""Time to target against numbers computed by hand from the fixture's definition."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.load import load_runs
from analysis.targets import TargetRule, time_to_target, time_to_target_markdown
from tests.fixtures_results import (
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
                assert row[f"{col}_ratio"] == pytest.approx(ratio, nan_ok=True)


def test_specific_numbers(runs: pd.DataFrame) -> None:
    table = time_to_target(runs).set_index(["workload", "optimizer"])
    mlbfgs = table.loc[("mnist1d_mlp", "mlbfgs")]
    assert (mlbfgs["iterations"], mlbfgs["iterations_ratio"]) == pytest.approx((62.5, 0.625))
    assert mlbfgs["seconds_ratio"] == pytest.approx(0.78125 / 1.125)
    # sgd itself does not reach the cifar target on every seed: every ratio there is undefined
    assert table.loc[("cifar10_resnet18", "sgd"), "seeds_reached"] == 1
    assert np.isnan(table.loc[("cifar10_resnet18", "mlbfgs"), "iterations_ratio"])


def test_markdown(runs: pd.DataFrame) -> None:
    table = time_to_target(runs)
    md = time_to_target_markdown(table, runs)
    assert "Target: test accuracy ≥ 0.8910, 0.99 × the final test accuracy of sgd" in md
    assert "| mlbfgs | 2/2 | 62.5 | 62.5 | 0.78 | 0.625 | 0.625 | 0.694 |" in md
    assert "| kfac | 1/2 | not reached | not reached | not reached | n/a | n/a | n/a |" in md
    finals = [ACC["mnist1d_mlp"]["mlbfgs"][s][-1] for s in SEEDS]
    assert "| seconds / sgd | final test accuracy |" in md
    assert f"| 0.694 | {np.mean(finals):.4f} ± {np.std(finals, ddof=1):.4f} |" in md
    assert md.index("### Time to target: cifar10_resnet18") < md.index("### Time to target: mnist1d_mlp")
    assert md == time_to_target_markdown(time_to_target(runs), runs)


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
