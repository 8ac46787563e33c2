"""Ours vs the authors' code table: configurations are never pooled, numbers checked by hand."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from analysis.variants import load_variant_runs, variant_markdown, variant_summary
from experiments.runner.csvlog import RUN_COLUMNS


def _write(root: Path, optimizer: str, seed: int, switch: dict, acc: float, loss: float,
           status: str = "finished") -> None:
    folder = root / "authors" / "runs" / "w"
    folder.mkdir(parents=True, exist_ok=True)
    rid = f"w__{optimizer}__s{seed}__{abs(hash(json.dumps(switch, sort_keys=True))) % 10**8}"
    config = {"lr": 0.3, "beta": 0.999, **{k.split(".", 1)[1]: v for k, v in switch.items()}}
    manifest = {"run_id": rid, "workload": "w", "optimizer": optimizer, "seed": seed, "status": status,
                "optimizer_config": config, "overrides": {"optimizer.lr": 0.3, "eval_interval": 10, **switch}}
    (folder / f"{rid}.json").write_text(json.dumps(manifest))
    with open(folder / f"{rid}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        w.writeheader()
        for t in range(1, 41):  # the last 5% = the last 2 rows: losses loss and loss + 0.2
            w.writerow({"run_id": rid, "workload": "w", "optimizer": optimizer, "seed": seed, "kind": "train",
                        "iteration": t, "train_loss": loss + (0.2 if t == 40 else 0.0) if t >= 39 else 9.0})
        w.writerow({"run_id": rid, "workload": "w", "optimizer": optimizer, "seed": seed, "kind": "eval",
                    "iteration": 40, "test_acc": acc, "test_loss": 1.0})


def test_configurations_are_separate_rows_with_their_own_means(tmp_path: Path) -> None:
    _write(tmp_path, "mlbfgs_authors", 0, {}, 0.70, 0.5)
    _write(tmp_path, "mlbfgs_authors", 1, {}, 0.72, 0.7)
    _write(tmp_path, "mlbfgs_authors", 0, {"optimizer.averages": "mean"}, 0.80, 0.3)
    _write(tmp_path, "mlbfgs_authors", 1, {"optimizer.averages": "mean"}, 0.84, 0.3)
    _write(tmp_path, "mlbfgs_authors", 0, {"optimizer.restart_grad_average": False}, 0.60, 0.9)
    _write(tmp_path, "mlbfgs", 0, {}, 0.90, 0.1)
    _write(tmp_path, "mlbfgs", 1, {}, 0.10, 0.1, status="running")  # unfinished: left out
    summary = variant_summary(load_variant_runs(tmp_path))
    rows = summary.set_index("variant")
    assert list(summary["variant"])[0] == "mlbfgs_authors"  # the reference first
    assert rows.loc["mlbfgs_authors", "final_test_acc"] == pytest.approx(0.71)
    # mean of the last 5% (2 of 40 rows) per seed: 0.6 and 0.8
    assert rows.loc["mlbfgs_authors", "final_train_loss"] == pytest.approx(0.7)
    assert rows.loc["mlbfgs_authors averages=mean", "delta_test_acc"] == pytest.approx(0.82 - 0.71)
    assert rows.loc["mlbfgs_authors restart_grad_average=false", "seeds"] == 1
    assert rows.loc["mlbfgs", "seeds"] == 1 and rows.loc["mlbfgs", "final_test_acc"] == pytest.approx(0.90)
    md = variant_markdown(summary)
    assert "| w | `mlbfgs_authors averages=mean` | 2 | 0.8200 ± 0.0283 |" in md


def test_absent_folder_gives_none(tmp_path: Path) -> None:
    assert load_variant_runs(tmp_path) is None


def test_lr_sensitivity_table_and_figure(tmp_path: Path) -> None:
    from analysis.sensitivity import load_trials, plot_sensitivity, sensitivity_markdown, sensitivity_summary

    (tmp_path / "tuning").mkdir()
    rows = ["workload,optimizer,trial,setting.lr,setting.beta,final_test_acc,final_train_loss,chosen,finished,run_id",
            "w,sgd,0,0.01,,0.60,1.0,False,True,a", "w,sgd,1,0.1,,0.80,0.5,True,True,b",
            "w,sgd,2,1.0,,nan,nan,False,True,c",
            "w,sgd,3,3.0,,0.10,nan,False,True,c3",  # diverged: NaN weights still get an argmax accuracy
            "w,mlbfgs,0,0.03,0.99,0.70,0.7,False,True,d", "w,mlbfgs,1,0.3,0.9,0.75,0.6,True,True,e"]
    (tmp_path / "tuning" / "long_trials.csv").write_text("\n".join(rows) + "\n")
    trials = load_trials(tmp_path)
    summary = sensitivity_summary(trials).set_index("optimizer")
    assert summary.loc["sgd", "trials"] == 4 and summary.loc["sgd", "finite"] == 2
    assert summary.loc["sgd", "chosen"] == "lr=0.1"
    assert summary.loc["mlbfgs", "chosen"] == "lr=0.3 beta=0.9"
    assert summary.loc["sgd", "median_acc"] == pytest.approx(0.70)
    md = sensitivity_markdown(sensitivity_summary(trials))
    assert "| w | sgd | 4 | 2 | lr=0.1 | 0.8000 | 0.7000 | 0.6000 |" in md  # the diverged 0.10 is not the worst
    assert len(plot_sensitivity(trials).axes) == 1
    assert load_trials(tmp_path / "nothing") is None


def test_the_ablation_reference_is_the_centre_of_the_design() -> None:
    import json

    import pandas as pd

    from analysis.ablations import ablation_markdown, centre
    from analysis.variants import variant_summary

    tuned = {"optimizer.beta": 0.99, "optimizer.update_period": 200}
    configs = [("mlbfgs", tuned), ("mlbfgs", {**tuned, "optimizer.beta": 0.9}),
               ("mlbfgs", {**tuned, "optimizer.update_period": 10}), ("mlbfgs_authors", tuned),
               ("mlbfgs", {**tuned, "optimizer.beta": 0.9, "optimizer.update_period": 10})]
    rows = []
    for i, (opt, over) in enumerate(configs):
        label = opt + " " + " ".join(f"{k.split('.')[1]}={v}" for k, v in sorted(over.items()))
        for seed in range(2):
            rows.append({"workload": "w", "variant": label, "config": str(i), "optimizer": opt, "seed": seed,
                         "overrides": json.dumps(over, sort_keys=True), "final_test_acc": 0.5 + 0.1 * i,
                         "final_train_loss": 1.0})
    runs = pd.DataFrame(rows)
    ref = centre(runs)
    assert ref == "mlbfgs beta=0.99 update_period=200"
    summary = variant_summary(runs, ref)
    assert summary.set_index("variant").loc["mlbfgs_authors beta=0.99 update_period=200", "delta_test_acc"] == \
        pytest.approx(0.3)
    assert "vs tuned" in ablation_markdown(summary, ref)
