"""External tuning: quasi-random trials from stated spaces, the choice, finals (and reuse of trials)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from experiments import tune
from experiments.presets import load_preset
from experiments.suite import resolve_preset
from experiments.tuning import Dimension, check_tuning, parse_space, sample_trials, space_seed, trial_runs

SPACE = {"lr": {"log_uniform": [1e-4, 1.0]}, "momentum": {"uniform": [0.8, 0.99]},
         "update_period": {"choice": [10, 50, 200]}}


def test_trials_are_quasi_random_inside_the_space_and_reproducible() -> None:
    dims = parse_space("mlbfgs", SPACE)
    a, b = sample_trials(dims, 16, seed=3), sample_trials(dims, 16, seed=3)
    assert a == b and a != sample_trials(dims, 16, seed=4)
    lrs = [t["lr"] for t in a]
    assert all(1e-4 <= x <= 1.0 for x in lrs)
    # log-uniform: a low-discrepancy sequence puts a quarter of the points in each quarter of log10(lr)
    quarters = [min(3, int((math.log10(x) + 4) / 1.0)) for x in lrs]
    assert sorted(quarters.count(q) for q in range(4)) == [4, 4, 4, 4]
    assert all(0.8 <= t["momentum"] <= 0.99 for t in a)
    assert {t["update_period"] for t in a} == {10, 50, 200}
    assert space_seed(0, "w", "sgd") == space_seed(0, "w", "sgd") != space_seed(0, "w", "adam")
    assert Dimension("x", "choice", choices=(1, 2)).value(0.999) == 2


@pytest.mark.parametrize("space, match", [
    ({"momentum": {"uniform": [0.8, 0.9]}}, "includes 'lr'"),
    ({"lr": {"uniform": [0.1, 1.0]}}, "lr must be log_uniform"),
    ({"lr": {"log_uniform": [0.0, 1.0]}}, r"low > 0"),
    ({"lr": {"log_uniform": [1.0, 0.1]}}, "low < high"),
    ({"lr": {"log_uniform": [0.1, 1.0]}, "a": {"choice": [1]}, "b": {"choice": [1]}, "c": {"choice": [1]}},
     "at most 2"),
    ({"lr": {"log_uniform": [0.1, 1.0]}, "beta": {"normal": [0, 1]}}, "must be one of"),
    ({"lr": {"log_uniform": [0.1, 1.0]}, "beta": {"choice": []}}, "non-empty"),
])
def test_bad_spaces_are_refused(space: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_space("sgd", space)


def test_long_preset_plans_equal_budgets() -> None:
    preset = resolve_preset("long", Path("/tmp/never-written"), None)
    names = {e.workload: list(e.optimizers) for e in preset.runs}
    spaces = check_tuning(preset, names)
    for entry in preset.runs:
        trials = [t for n in names[entry.workload] for t in trial_runs(preset, entry, n, spaces[n])]
        per_optimizer = {n: sum(t.optimizer == n for t in trials) for n in names[entry.workload]}
        assert set(per_optimizer.values()) == {preset.tuning["trials"]} and preset.tuning["trials"] >= 6
        assert {t.run.seed for t in trials} == {0}
        epochs = {a for t in trials for a in [t.run.args[t.run.args.index("--epochs") + 1]]}
        assert epochs == {str(max(1, round(entry.epochs * entry.trial_fraction)))}
        assert entry.trial_fraction >= 0.25
    assert preset.runs[0].seeds == (0, 1, 2, 3, 4)
    with pytest.raises(ValueError, match="trial_fraction"):
        check_tuning(replace(preset, runs=(replace(preset.runs[1], trial_fraction=0.1),)), names)
    with pytest.raises(ValueError, match="no search space"):
        check_tuning(preset, {"w": ["sqn"]})


def test_tune_end_to_end_reuses_full_length_trials(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = {"name": "tiny", "seeds": [0, 1],
           "tuning": {"trials": 2, "seed": 0, "search_seed": 0,
                      "spaces": {"sgd": {"lr": {"log_uniform": [0.01, 0.3]}},
                                 "adam": {"lr": {"log_uniform": [1e-3, 1e-2]}, "eps": {"log_uniform": [1e-9, 1e-7]}}}},
           "runs": [{"workload": "mnist1d-mlp", "optimizers": ["sgd", "adam"], "max_iters": 8,
                     "set": {"eval_interval": 4}}]}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    out = tmp_path / "out"
    assert load_preset(str(path)).tuning["trials"] == 2
    assert tune.main(["--preset", str(path), "--out", str(out), "--threads", "1", "--no-analysis"]) == 0
    with open(out / "tuning" / "tiny_trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and sum(r["chosen"] == "True" for r in rows) == 2
    best = json.loads((out / "tuning" / "tiny_best.json").read_text())
    chosen_sgd = next(r for r in rows if r["optimizer"] == "sgd" and r["chosen"] == "True")
    assert best["mnist1d-mlp"]["sgd"] == {"lr": float(chosen_sgd["setting.lr"])}
    finals = sorted(p.name for p in (out / "runs" / "mnist1d-mlp").glob("*.json"))
    assert len(finals) == 4  # 2 optimizers x 2 seeds
    assert chosen_sgd["run_id"] + ".json" in finals  # the seed-0 final is the chosen trial, copied
    record = json.loads((out / "tune_tiny.json").read_text())
    ran = [r["run_id"] for r in record["runs"] if r["status"] == "finished"]
    assert chosen_sgd["run_id"] in ran and ran.count(chosen_sgd["run_id"]) == 1  # trained once, as a trial
