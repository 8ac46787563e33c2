"""Learning-rate sweep: grid extension at the edges and the choice of the rate."""

import csv
import math

from experiments.sweep import _score, extend_grid, final_metrics


def test_extend_grid_only_at_the_edges() -> None:
    assert extend_grid([0.01, 0.03, 0.1], 0.1) == 0.3
    assert extend_grid([0.01, 0.03, 0.1], 0.01) == float(f"{0.01 / 3:.6g}")
    assert extend_grid([0.01, 0.03, 0.1], 0.03) is None


def test_diverged_runs_rank_last(tmp_path) -> None:
    path = tmp_path / "run.csv"
    cols = ["run_id", "workload", "optimizer", "seed", "kind", "epoch", "iteration", "train_loss", "lr", "wall_s",
            "grad_evals", "test_loss", "test_acc", "eval_s"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerow({"kind": "train", "train_loss": "0.5"})
        w.writerow({"kind": "eval", "test_acc": "0.8"})
        w.writerow({"kind": "train", "train_loss": "nan"})
    acc, loss = final_metrics(path)
    assert acc == 0.8 and math.isnan(loss)
    good = {"final_test_acc": 0.1, "final_train_loss": 2.0}
    assert _score(good) > _score({"final_test_acc": acc, "final_train_loss": loss})
    assert _score({"final_test_acc": 0.9, "final_train_loss": 0.1}) > _score(good)
