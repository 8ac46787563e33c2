"""The tuning preset's stages: quasi-random trials from stated spaces, the choice (final metrics read
through analysis/), finals (and reuse of trials), dry-run plans, and a tiny preset end to end."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.load import RUN_COLUMNS
from experiments.runner.atomic import write_json
from experiments.suite import cli as suite
from experiments.suite.cli import resolve_preset
from experiments.suite.planning import PlannedRun
from experiments.suite.presets import load_preset
from experiments.suite.search import (
    Dimension,
    best_settings,
    check_tuning,
    final_runs,
    noise_threshold,
    parse_space,
    preset_trials,
    sample_trials,
    space_seed,
    tied_trials,
    trial_runs,
)
from tests.support.suite_output import listed_run_ids

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


TINY = {"name": "tiny", "seeds": [0, 1],
        "tuning": {"trials": 2, "seed": 0, "search_seed": 0,
                   "spaces": {"sgd": {"lr": {"log_uniform": [0.01, 0.3]}},
                              "adam": {"lr": {"log_uniform": [1e-3, 1e-2]}, "eps": {"log_uniform": [1e-9, 1e-7]}}}},
        "runs": [{"workload": "mnist1d-mlp", "optimizers": ["sgd", "adam"], "max_iters": 8,
                  "set": {"eval_interval": 4}}]}


def write_preset(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / f"{raw['name']}.json"
    path.write_text(json.dumps(raw))
    return path


def fake_finished(run: PlannedRun, acc: float, loss: float = 0.5, num_test: int = 10_000) -> None:
    """A finished run with these final metrics, as the runner would leave it (CSV, then manifest)."""
    run.manifest.parent.mkdir(parents=True, exist_ok=True)
    with open(run.manifest.with_suffix(".csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        writer.writerows([{"kind": "train", "train_loss": loss}, {"kind": "eval", "test_acc": acc}])
    write_json(run.manifest, {"run_id": run.run_id, "status": "finished", "num_test": num_test})


def test_choice_covers_every_finished_pair_whatever_the_selection(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    raw = {**TINY, "seeds": [0], "runs": [*TINY["runs"], {**TINY["runs"][0], "workload": "fmnist-cnn"}]}
    path = write_preset(tmp_path, raw)
    out = tmp_path / "out"
    preset = resolve_preset(str(path), out, None)
    spaces = check_tuning(preset, {e.workload: list(e.optimizers) for e in preset.runs})
    trials = preset_trials(preset, spaces)
    assert [(t.workload, t.optimizer, t.index) for t in trials] == [
        (w, o, i) for w in ("mnist1d-mlp", "fmnist-cnn") for o in ("sgd", "adam") for i in (0, 1)]
    for t in trials:
        if (t.workload, t.optimizer) != ("fmnist-cnn", "adam"):  # its trials are still to run
            fake_finished(t.run, 0.5 + 0.1 * t.index, loss=0.5)
    best = {(t.workload, t.optimizer): t for t in trials if t.index == 1}
    base = ["--preset", str(path), "--out", str(out), "--no-analysis"]

    # the finals of fmnist-cnn's adam wait for its trials: without the trials stage that is an error
    for dry in (["--dry-run"], []):
        assert suite.main([*base, "--workloads", "fmnist-cnn", "--stages", "final", *dry]) == 2
        assert "the trials of ['fmnist-cnn/adam'] have not finished" in capsys.readouterr().err
    assert not (out / "suite_tiny.json").exists()
    ready = [*base, "--workloads", "fmnist-cnn", "--optimizers", "sgd", "--stages", "final"]
    assert suite.main([*ready, "--dry-run"]) == 0
    sgd_final = final_runs(preset, preset.runs[1], "sgd", best[("fmnist-cnn", "sgd")].settings)
    assert listed_run_ids(capsys.readouterr().out) == [r.run_id for r in sgd_final]
    assert not (out / "tuning" / "tiny_best.json").exists()  # a dry run writes nothing

    # the finals of fmnist-cnn's sgd, copied from its full-length trial
    assert suite.main(ready) == 0
    capsys.readouterr()
    record = json.loads((out / "suite_tiny.json").read_text())
    (command,) = record["invocations"]
    assert command["failed_runs"] == 0 and command["stages_selected"] == ["final"]
    assert command["stages"]["final"]["runs"] == [{"run_id": sgd_final[0].run_id,
                                                   "status": "copied (finished as a trials run)"}]
    assert sgd_final[0].manifest.is_file() and sgd_final[0].run_id == best[("fmnist-cnn", "sgd")].run.run_id
    chosen = json.loads((out / "tuning" / "tiny_best.json").read_text())
    expected = {w: {o: best[(w, o)].settings for o in names}
                for w, names in (("fmnist-cnn", ["sgd"]), ("mnist1d-mlp", ["adam", "sgd"]))}
    assert chosen == expected == record["chosen"]  # mnist1d-mlp kept although only fmnist-cnn was selected
    with open(out / "tuning" / "tiny_trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["workload"], r["optimizer"], r["trial"], r["chosen"], r["finished"]) for r in rows] == [
        (t.workload, t.optimizer, str(t.index), str(t.index == 1), "True") for t in trials
        if (t.workload, t.optimizer) != ("fmnist-cnn", "adam")]
    assert list(rows[0]) == ["workload", "optimizer", "trial", "setting.eps", "setting.lr", "final_test_acc",
                             "final_train_loss", "seeds", "mean_test_acc", "chosen", "finished", "run_id"]
    assert [float(r["final_test_acc"]) for r in rows[:2]] == [0.5, 0.6]


def test_tuning_preset_end_to_end_reuses_full_length_trials(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_preset(tmp_path, TINY)
    out = tmp_path / "out"
    assert load_preset(str(path)).tuning["trials"] == 2
    base = ["--preset", str(path), "--out", str(out), "--threads", "1", "--no-analysis"]
    assert suite.main(base) == 0
    capsys.readouterr()
    with open(out / "tuning" / "tiny_trials.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and sum(r["chosen"] == "True" for r in rows) == 2
    best = json.loads((out / "tuning" / "tiny_best.json").read_text())
    chosen_sgd = next(r for r in rows if r["optimizer"] == "sgd" and r["chosen"] == "True")
    assert best["mnist1d-mlp"]["sgd"] == {"lr": float(chosen_sgd["setting.lr"])}
    finals = sorted(p.name for p in (out / "runs" / "mnist1d-mlp").glob("*.json"))
    assert len(finals) == 4  # 2 optimizers x 2 seeds
    assert chosen_sgd["run_id"] + ".json" in finals  # the seed-0 final is the chosen trial, copied
    record = json.loads((out / "suite_tiny.json").read_text())
    (command,) = record["invocations"]
    assert set(command["stages"]) == {"trials", "final"} and record["tuning"] == TINY["tuning"]
    trained = [r["run_id"] for stage in command["stages"].values() for r in stage["runs"] if r["status"] == "finished"]
    assert trained.count(chosen_sgd["run_id"]) == 1  # trained once, as a trial
    statuses = {r["run_id"]: r["status"] for r in command["stages"]["final"]["runs"]}
    assert statuses[chosen_sgd["run_id"]] == "copied (finished as a trials run)"
    assert sorted(s for s in statuses.values()) == ["copied (finished as a trials run)"] * 2 + ["finished"] * 2

    assert suite.main([*base, "--dry-run"]) == 0  # everything finished: the plan lists it all as skipped
    text = capsys.readouterr().out
    assert text.count("finished, skipped") == 8 and "would" not in text


def test_noise_threshold_is_two_binomial_standard_errors() -> None:
    # 1.96 sqrt(2 p (1 - p) / n) by hand at p = 0.88 on 10,000 images
    assert noise_threshold(0.88, 10_000) == pytest.approx(1.96 * math.sqrt(2 * 0.88 * 0.12 / 10_000))
    assert noise_threshold(0.88, 10_000) == pytest.approx(0.0090, abs=1e-4)
    assert noise_threshold(0.75, 1_000) > noise_threshold(0.75, 10_000)


def test_a_tie_within_noise_is_decided_by_more_seeds(tmp_path: Path) -> None:
    """The ResNet case: two best trials 0.0002 apart on 10,000 images. The first seed's winner loses on
    the mean over three seeds; a gap beyond the noise calls for no tie-break."""
    raw = {**TINY, "seeds": [0], "tuning": {**TINY["tuning"], "tiebreak_seeds": [1, 2]}}
    preset = resolve_preset(str(write_preset(tmp_path, raw)), tmp_path / "out", None)
    spaces = check_tuning(preset, {e.workload: list(e.optimizers) for e in preset.runs})
    trials = [t for t in preset_trials(preset, spaces) if t.optimizer == "sgd"]
    first, second = trials
    fake_finished(first.run, 0.8771)
    fake_finished(second.run, 0.8769)
    ties = tied_trials(preset, trials)
    assert sorted((t.index, t.run.seed) for t in ties) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert {t.settings["lr"] for t in ties if t.index == 0} == {first.settings["lr"]}
    rows, chosen = best_settings(trials)  # without the tie-breaks: the first seed's order
    assert chosen["mnist1d-mlp"]["sgd"] == first.settings
    for t in ties:
        fake_finished(t.run, 0.86 if t.index == 0 else 0.88)
    rows, chosen = best_settings(trials, ties)
    assert chosen["mnist1d-mlp"]["sgd"] == second.settings
    assert [(r["trial"], r["seeds"], r["chosen"]) for r in rows] == [(0, 3, False), (1, 3, True)]
    assert rows[1]["mean_test_acc"] == pytest.approx((0.8769 + 0.88 + 0.88) / 3)
    fake_finished(second.run, 0.8600)  # 0.0171 apart: beyond the noise
    assert tied_trials(preset, trials) == []
