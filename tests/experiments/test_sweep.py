"""The sweep preset's stages: rounds with grid extension at the edges, the choice of the rate (final
metrics read through analysis/), finals and ablation, dry-run plans, and a tiny preset end to end."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from analysis.finals import final_metrics
from analysis.load import RUN_COLUMNS, SchemaError
from experiments.runner.atomic import write_json
from experiments.suite import cli as suite
from experiments.suite.choice import score
from experiments.suite.cli import resolve_preset
from experiments.suite.planning import PlannedRun
from experiments.suite.presets import load_preset
from experiments.suite.stages.sweep import (
    ablation_runs,
    check,
    choose_rates,
    chosen_rates,
    extend_grid,
    final_runs,
    rate_rows,
    sweep_rounds,
)
from tests.support.suite_output import listed_run_ids

TINY = {
    "name": "tiny",
    "seeds": [0, 1],
    "sweep": {"seed": 0, "extend": 2, "grids": {"sgd": [0.01, 0.1], "mlbfgs": [0.001, 0.01]}},
    "ablation": [{"workload": "mnist1d-mlp", "optimizer": "mlbfgs", "betas": [0.5]}],
    "runs": [{"workload": "mnist1d-mlp", "optimizers": ["sgd", "mlbfgs"], "max_iters": 6,
              "set": {"eval_interval": 3}}],
}


def write_preset(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / f"{raw['name']}.json"
    path.write_text(json.dumps(raw))
    return path


def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def fake_finished(run: PlannedRun, acc: float, loss: float = 0.5) -> None:
    """A finished run with these final metrics, as the runner would leave it (CSV, then manifest)."""
    write_csv(run.manifest.with_suffix(".csv"), [{"run_id": run.run_id, "kind": "train", "train_loss": loss},
                                                 {"run_id": run.run_id, "kind": "eval", "test_acc": acc}])
    write_json(run.manifest, {"run_id": run.run_id, "status": "finished"})


def test_extend_grid_only_at_the_edges() -> None:
    assert extend_grid([0.01, 0.03, 0.1], 0.1) == 0.3
    assert extend_grid([0.01, 0.03, 0.1], 0.01) == float(f"{0.01 / 3:.6g}")
    assert extend_grid([0.01, 0.03, 0.1], 0.03) is None


def test_final_metrics_are_the_last_rows_of_each_kind(tmp_path: Path) -> None:
    path = tmp_path / "run.csv"
    write_csv(path, [{"kind": "train", "train_loss": "0.5"}, {"kind": "eval", "test_acc": "0.8"},
                     {"kind": "train", "train_loss": "nan"}])
    acc, loss = final_metrics(path)
    assert acc == 0.8 and math.isnan(loss)  # a diverged last loss is not replaced by an earlier finite one
    good = {"final_test_acc": 0.1, "final_train_loss": 2.0}
    assert score(good) > score({"final_test_acc": acc, "final_train_loss": loss})
    assert score({"final_test_acc": 0.9, "final_train_loss": 0.1}) > score(good)
    write_csv(path, [{"kind": "eval", "test_acc": "0.7"}, {"kind": "eval", "test_acc": "nan"},
                     {"kind": "train", "train_loss": "0.25"}, {"kind": "train", "train_loss": "inf"},
                     {"kind": "eval", "test_acc": "0.75"}])
    acc, loss = final_metrics(path)
    assert acc == 0.75 and loss == math.inf
    write_csv(path, [])
    assert all(math.isnan(v) for v in final_metrics(path))  # header only
    assert all(math.isnan(v) for v in final_metrics(tmp_path / "missing.csv"))
    path.write_text("run_id,kind\nx,eval\n")
    with pytest.raises(SchemaError, match="missing column"):
        final_metrics(path)


def test_rounds_extend_at_the_edge_and_replay_from_finished_runs(tmp_path: Path) -> None:
    preset = resolve_preset(str(write_preset(tmp_path, TINY)), tmp_path / "out", None)
    entry = preset.runs[0]
    first = sweep_rounds(preset, entry, ["sgd"], stop_at_unfinished=True)
    assert [s.lr for s in first] == [0.01, 0.1]  # nothing finished: the first round only
    fake_finished(first[0].run, 0.5)
    fake_finished(first[1].run, 0.6)  # the largest rate is best: the grid grows up
    second = sweep_rounds(preset, entry, ["sgd"], stop_at_unfinished=True)
    assert [s.lr for s in second] == [0.01, 0.1, 0.3]
    fake_finished(second[2].run, 0.7)
    third = sweep_rounds(preset, entry, ["sgd"])
    assert [s.lr for s in third] == [0.01, 0.1, 0.3, 0.9]  # extend = 2: two extensions at most
    fake_finished(third[3].run, 0.8)
    assert [s.lr for s in sweep_rounds(preset, entry, ["sgd"])] == [0.01, 0.1, 0.3, 0.9]
    # without training anything the rounds follow the finished runs, extensions included
    rows = rate_rows(sweep_rounds(preset, entry, ["sgd"]))
    assert chosen_rates(rows) == {"mnist1d-mlp": {"sgd": 0.9}}
    assert [r["chosen"] for r in rows] == [False, False, False, True]
    # a diverged run ranks last, whatever its accuracy
    fake_finished(third[3].run, 0.95, loss=math.nan)
    assert chosen_rates(rate_rows(sweep_rounds(preset, entry, ["sgd"]))) == {"mnist1d-mlp": {"sgd": 0.3}}
    # equal scores keep the first; runs of rounds the new results would not reach drop out
    fake_finished(first[1].run, 0.5)
    fake_finished(second[2].run, 0.5)
    rounds = sweep_rounds(preset, entry, ["sgd"])
    assert [s.lr for s in rounds] == [0.01, 0.1, 0.00333333]
    assert chosen_rates(rate_rows(rounds)) == {"mnist1d-mlp": {"sgd": 0.01}}


def test_choice_files_cover_every_workload_and_finals_follow_the_choice(tmp_path: Path) -> None:
    raw = {**TINY, "runs": [*TINY["runs"], {"workload": "fmnist-cnn", "optimizers": ["sgd"], "max_iters": 6}]}
    preset = resolve_preset(str(write_preset(tmp_path, raw)), tmp_path / "out", None)
    mnist, cnn = preset.runs
    for _ in range(2):  # the smallest rates are best: each grid grows down once
        for s in sweep_rounds(preset, mnist, ["sgd", "mlbfgs"]):
            fake_finished(s.run, 0.9 if s.lr in (0.01, 0.001) else 0.1)
    (cnn_run,) = [s for s in sweep_rounds(preset, cnn, ["sgd"]) if s.lr == 0.1]
    fake_finished(cnn_run.run, 0.6)
    chosen = choose_rates(preset)
    assert chosen == {"fmnist-cnn": {"sgd": 0.1}, "mnist1d-mlp": {"mlbfgs": 0.001, "sgd": 0.01}}
    out = Path(preset.results) / "sweep"
    assert json.loads((out / "tiny_best_lr.json").read_text()) == chosen
    with open(out / "tiny_lr.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["workload", "optimizer", "lr", "final_test_acc", "final_train_loss", "run_id", "chosen"]
    assert [(r["workload"], r["optimizer"], float(r["lr"])) for r in table] == [
        ("mnist1d-mlp", "sgd", 0.01), ("mnist1d-mlp", "sgd", 0.1), ("mnist1d-mlp", "mlbfgs", 0.001),
        ("mnist1d-mlp", "mlbfgs", 0.01), ("mnist1d-mlp", "sgd", 0.00333333), ("mnist1d-mlp", "mlbfgs", 0.000333333),
        ("fmnist-cnn", "sgd", 0.1)]  # round by round, finished runs only, every workload of the preset

    finals = final_runs(preset, mnist, {"sgd": 0.01, "mlbfgs": 0.001})
    assert [(r.seed, r.optimizer) for r in finals] == [(0, "sgd"), (0, "mlbfgs"), (1, "sgd"), (1, "mlbfgs")]
    assert all(r.manifest.parent == Path(preset.results) / "runs" / "mnist1d-mlp" for r in finals)
    (sgd_sweep,) = [s for s in sweep_rounds(preset, mnist, ["sgd"]) if s.lr == 0.01]
    assert finals[0].run_id == sgd_sweep.run.run_id  # the seed-0 final is the sweep's run
    assert "optimizer.lr=0.01" in finals[0].args
    ablation = ablation_runs(preset, mnist, {"sgd": 0.01, "mlbfgs": 0.001})
    assert [r.seed for r in ablation] == [0, 1]
    assert all({"optimizer.beta=0.5", "optimizer.lr=0.001"} <= set(r.args) for r in ablation)
    assert ablation_runs(preset, mnist, {"sgd": 0.01}) == []  # the ablation's optimizer was not selected


def test_dry_run_lists_sweep_finals_and_ablation_in_order(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_preset(tmp_path, TINY)
    out = tmp_path / "out"
    preset = resolve_preset(str(path), out, None)
    entry = preset.runs[0]
    base = ["--preset", str(path), "--out", str(out), "--dry-run"]
    assert suite.main(base) == 0
    text = capsys.readouterr().out
    assert "final and ablation wait for 4 unfinished sweep run(s)" in text
    assert listed_run_ids(text) == [s.run.run_id for s in sweep_rounds(preset, entry, ["sgd", "mlbfgs"])]
    accuracy = {("sgd", 0.01): 0.5, ("sgd", 0.1): 0.8, ("sgd", 0.3): 0.1,
                ("mlbfgs", 0.001): 0.5, ("mlbfgs", 0.01): 0.8, ("mlbfgs", 0.03): 0.1}
    for _ in range(2):  # the largest rates are best: each grid grows up once, then the choice is inside
        for s in sweep_rounds(preset, entry, ["sgd", "mlbfgs"]):
            fake_finished(s.run, accuracy[(s.optimizer, s.lr)])
    rates = {"sgd": 0.1, "mlbfgs": 0.01}
    assert suite.main(base) == 0
    text = capsys.readouterr().out
    finals, ablation = final_runs(preset, entry, rates), ablation_runs(preset, entry, rates)
    swept = sweep_rounds(preset, entry, ["sgd", "mlbfgs"])
    assert [s.lr for s in swept] == [0.01, 0.1, 0.001, 0.01, 0.3, 0.03]
    assert listed_run_ids(text) == [s.run.run_id for s in swept] + [r.run_id for r in finals + ablation]
    assert f"{finals[0].run_id}: finished in {out / 'sweep' / 'runs' / 'mnist1d-mlp'}, would be copied" in text
    assert not (out / "suite_tiny.json").exists() and not (out / "runs").exists()  # a dry run writes nothing
    assert not (out / "sweep" / "tiny_lr.csv").exists()
    assert suite.main([*base, "--stages", "final"]) == 0  # the choice replays the finished sweep
    assert listed_run_ids(capsys.readouterr().out) == [r.run_id for r in finals]
    assert suite.main([*base, "--stages", "final", "--optimizers", "mlbfgs", "--seeds", "1"]) == 0
    expected = [r.run_id for r in final_runs(preset, entry, {"mlbfgs": 0.01}, [1])]
    assert listed_run_ids(capsys.readouterr().out) == expected


def test_sweep_sections_are_checked() -> None:
    preset = load_preset("full")
    check(preset)
    with pytest.raises(ValueError, match=r"no learning rates for \['sgd'\]"):
        check(replace(preset, sweep={"grids": {k: v for k, v in preset.sweep["grids"].items() if k != "sgd"}}))
    with pytest.raises(ValueError, match="ablation workload must be one of"):
        check(replace(preset, ablation=({"workload": "cifar10-resnet18", "optimizer": "sgd", "betas": [0.9]},)))
    with pytest.raises(ValueError, match="ablation optimizer on mnist1d-mlp must be one of"):
        check(replace(preset, ablation=({"workload": "mnist1d-mlp", "optimizer": "sqn", "betas": [0.9]},)))
    with pytest.raises(ValueError, match="non-empty list of positive"):
        check(replace(preset, sweep={"grids": {**preset.sweep["grids"], "sgd": []}}))


def test_sweep_preset_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # three processes: the sweep's two rounds and the ablation (the finals are the sweep's runs, copied)
    raw = {**TINY, "seeds": [0], "sweep": {"seed": 0, "extend": 1, "grids": {"sgd": [0.05], "mlbfgs": [0.003]}}}
    path = write_preset(tmp_path, raw)
    out = tmp_path / "out"
    base = ["--preset", str(path), "--out", str(out), "--threads", "1", "--no-analysis"]
    assert suite.main(base) == 0
    capsys.readouterr()
    preset = resolve_preset(str(path), out, None)
    swept = sweep_rounds(preset, preset.runs[0], ["sgd", "mlbfgs"])
    assert [s.lr for s in swept] == [0.05, 0.003, 0.15, 0.009]  # a one-rate grid is its own edge: one extension
    best = json.loads((out / "sweep" / "tiny_best_lr.json").read_text())
    assert set(best["mnist1d-mlp"]) == {"sgd", "mlbfgs"}
    finals = final_runs(preset, preset.runs[0], best["mnist1d-mlp"])
    ablation = ablation_runs(preset, preset.runs[0], best["mnist1d-mlp"])
    record = json.loads((out / "suite_tiny.json").read_text())
    (command,) = record["invocations"]
    assert command["stages_selected"] == ["sweep", "final", "ablation"] and command["failed_runs"] == 0
    stages = command["stages"]
    assert set(stages) == {"sweep", "final", "ablation"} and record["chosen"] == best
    assert [r["run_id"] for r in stages["sweep"]["runs"]] == [s.run.run_id for s in swept]
    status = {r["run_id"]: r["status"] for r in stages["final"]["runs"]}
    assert set(status) == {r.run_id for r in finals}
    assert [status[r.run_id] for r in finals] == ["copied (finished as a sweep run)"] * 2
    assert [(json.loads(r.manifest.read_text())["run_id"], r.manifest.parent.parent) for r in finals] == [
        (r.run_id, out / "runs") for r in finals]
    assert {r["run_id"] for r in stages["ablation"]["runs"]} == {r.run_id for r in ablation}
    assert all(r.manifest.is_file() for r in finals + ablation)

    assert suite.main(base) == 0  # rerun: nothing trains, nothing is copied again
    text = capsys.readouterr().out
    assert "running" not in text and "copied" not in text
    assert text.count("finished, skipped") == len(swept) + len(finals) + len(ablation)
