"""The suite driver: stages per preset, --help, output outside results/, lockstep groups, the grid stage
(skip finished runs, --force, separate mode), the record, dotted optimizer names."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from experiments.suite import cli as suite
from experiments.suite.cli import resolve_preset
from experiments.suite.execution import groups
from experiments.suite.planning import plan
from experiments.suite.presets import available_presets, load_preset
from experiments.suite.stages import preset_stages, select_stages
from tests.support import REPO

TINY_PRESET = {
    "name": "tiny",
    "description": "two optimizers on MNIST-1D for a few iterations",
    "seeds": [0],
    "runs": [{"workload": "mnist1d-mlp", "optimizers": ["sgd", "adam"], "max_iters": 12,
              "set": {"eval_interval": 5}}],
}


@pytest.fixture()
def preset_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_PRESET))
    return path


def test_stages_follow_the_preset_sections(tmp_path: Path) -> None:
    assert {name: preset_stages(load_preset(name)) for name in available_presets()} == {
        "authors": ("grid", "analysis"),
        "block_defaults": ("grid", "analysis"),
        "full": ("sweep", "final", "ablation", "analysis"),
        "long": ("trials", "final", "analysis"),
        "long_ablations": ("grid", "analysis"),
        "paper": ("grid", "analysis"),
        "quick": ("grid", "analysis"),
        "resnet_diagnosis": ("grid", "analysis"),
        "resnet_long_horizon": ("grid", "analysis"),
    }
    full = load_preset("full")
    assert select_stages(full, None) == ("sweep", "final", "ablation", "analysis")
    assert select_stages(full, ["ablation", "sweep"]) == ("sweep", "ablation")  # the preset's order
    assert select_stages(full, None, analysis=False) == ("sweep", "final", "ablation")
    assert preset_stages(replace(full, ablation=())) == ("sweep", "final", "analysis")
    with pytest.raises(ValueError, match=r"stages of preset full must be among \['sweep', 'final', 'ablation', "
                                         r"'analysis'\], got \['trials'\]"):
        select_stages(full, ["trials"])
    with pytest.raises(ValueError, match="not both"):
        preset_stages(replace(full, tuning=load_preset("long").tuning))
    with pytest.raises(ValueError, match="needs a 'sweep' section"):
        preset_stages(replace(full, sweep={}))


def test_bad_arguments_name_the_allowed_values(preset_file: Path, capsys: pytest.CaptureFixture) -> None:
    for args, message in [
        (["--preset", "quick", "--stages", "trials"], "stages of preset quick must be among ['grid', 'analysis']"),
        (["--preset", "long", "--stages", "grid"], "must be among ['trials', 'final', 'analysis']"),
        (["--preset", "quick", "--workloads", "fmnist-vit"], "workloads must be among ['fmnist-cnn', 'mnist1d-mlp']"),
        (["--preset", "quick", "--optimizers", "sqn"], "optimizers must be among ['adam', 'kfac', 'mlbfgs'"),
        (["--preset", "nope"], "preset must be one of ['authors', 'block_defaults', 'full', 'long', "
                               "'long_ablations', 'paper', 'quick', 'resnet_diagnosis', 'resnet_long_horizon']"),
        (["--preset", str(preset_file), "--jobs", "0"], "jobs must be a positive integer"),
    ]:
        assert suite.main([*args, "--dry-run"]) == 2
        assert message in capsys.readouterr().err


def test_help_lists_the_presets_and_their_stages(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as stop:
        suite.main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for name in available_presets():
        stages = ", ".join(preset_stages(load_preset(name)))
        assert re.search(rf"^  {name} +{stages}$", text, re.M), name


def test_dotted_optimizer_names_are_left_to_the_runner(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = {**TINY_PRESET, "runs": [{**TINY_PRESET["runs"][0], "optimizers": ["sgd", "torch.optim:SGD"]}]}
    path = tmp_path / "dotted.json"
    path.write_text(json.dumps(raw))
    runs = plan(load_preset(str(path)))
    assert [r.optimizer for r in runs] == ["sgd", "torch.optim:SGD"]
    assert runs[1].args[:4] == ("--workload", "mnist1d-mlp", "--optimizer", "torch.optim:SGD")
    assert suite.main(["--preset", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    assert "torch.optim:SGD" in capsys.readouterr().out
    raw["runs"][0]["optimizers"] = ["sgd", "not_registered"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"optimizer must be one of \[.*'sgd'.*\] or 'module.path:ClassName', "
                                         r"got 'not_registered'"):
        plan(load_preset(str(path)))


def test_default_output_is_ignored_by_git_and_outside_results() -> None:
    for name in ("quick", "full"):
        preset = resolve_preset(name, None, None)
        assert Path(preset.results) == Path("runs") / name
        for run in plan(preset):
            assert run.manifest.parts[:3] == ("runs", name, "runs")
    probe = subprocess.run(["git", "check-ignore", "-q", "runs/quick/runs/x/y.csv"], cwd=REPO)
    assert probe.returncode == 0  # git ignores the main job's output
    assert Path(resolve_preset("quick", Path("/tmp/x"), None).results) == Path("/tmp/x")


def test_preset_may_not_name_an_output_folder(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**TINY_PRESET, "results": "results"}))
    with pytest.raises(ValueError, match="--out"):
        load_preset(str(path))


def test_lockstep_groups_share_workload_seed_and_data() -> None:
    runs = plan(load_preset("quick"), seeds=[0, 1])
    lock = groups(runs, "lockstep")
    assert [len(g) for g in lock] == [5, 5, 5, 5]
    for g in lock:
        assert len({r.group_key for r in g}) == 1
    assert [len(g) for g in groups(runs, "separate")] == [1] * 20
    with pytest.raises(ValueError, match="mode must be one of"):
        groups(runs, "parallel")


def test_lockstep_groups_are_dealt_to_keep_every_job_busy_only_when_split() -> None:
    runs = plan(load_preset("quick"), seeds=[0, 1])
    dealt = groups(runs, "lockstep", jobs=2, split=True)
    assert [len(g) for g in dealt] == [3, 2, 3, 2, 3, 2, 3, 2]
    assert [r.run_id for r in dealt[0] + dealt[1]] == [r.run_id for r in runs[0:5:2] + runs[1:5:2]]
    assert [len(g) for g in groups(runs, "lockstep", jobs=3, split=True)] == [5, 5, 5, 5]  # too small to deal


@pytest.mark.parametrize("preset", ["quick", "long_ablations", "resnet_diagnosis", "block_defaults",
                                    "resnet_long_horizon"])
def test_jobs_never_split_a_lockstep_group_whose_seconds_compare(preset: str) -> None:
    """--jobs N runs whole (workload, seed) groups side by side: every run of a group trains in one
    process (one clock), whatever N; only the tuning trials are dealt (split=True)."""
    runs = plan(load_preset(preset))
    for jobs in (1, 2, 4):
        parts = groups(runs, "lockstep", jobs=jobs)
        keys = [r.group_key for part in parts for r in part[:1]]
        assert len(keys) == len(set(keys))  # no (workload, seed, data) group in two processes
        assert sorted(r.run_id for part in parts for r in part) == sorted(r.run_id for r in runs)

    with pytest.raises(ValueError, match="jobs must be a positive integer"):
        groups(runs, "lockstep", jobs=0)


def _losses(root: Path) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for path in sorted((root / "runs" / "mnist1d-mlp").glob("*.csv")):
        with open(path, newline="") as f:
            out[path.name] = [(r["iteration"], r["train_loss"] or r["test_loss"]) for r in csv.DictReader(f)]
    return out


def test_suite_trains_skips_forces_and_modes_agree(tmp_path: Path, preset_file: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    base = ["--preset", str(preset_file), "--out", str(out), "--no-analysis", "--threads", "1"]
    assert suite.main(base) == 0
    text = capsys.readouterr().out
    assert "lockstep" in text and "running" in text
    first = _losses(out)
    assert len(first) == 2 and all(len(v) == 12 + 4 for v in first.values())  # 12 train + evals 0, 5, 10, 12
    (command,) = json.loads((out / "suite_tiny.json").read_text())["invocations"]
    assert command["stages_selected"] == ["grid"] and list(command["stages"]) == ["grid"]
    assert command["command"].startswith("python -m experiments.suite --preset") and command["failed_runs"] == 0
    grid = command["stages"]["grid"]
    assert [r["status"] for r in grid["runs"]] == ["finished", "finished"] and grid["seconds"] > 0
    assert {r["group_size"] for r in grid["runs"]} == {2}

    assert suite.main([*base, "--dry-run"]) == 0  # the plan: both finished
    assert capsys.readouterr().out.count("finished, skipped") == 2
    assert suite.main(base) == 0  # rerun: nothing trains
    text = capsys.readouterr().out
    assert text.count("finished, skipped") == 2 and "running" not in text
    record = json.loads((out / "suite_tiny.json").read_text())
    assert [r["status"] for r in record["invocations"][-1]["stages"]["grid"]["runs"]] == ["skipped (finished)"] * 2

    stamp = {p.name: p.stat().st_mtime_ns for p in (out / "runs" / "mnist1d-mlp").glob("*.csv")}
    assert suite.main([*base, "--force"]) == 0
    assert "running" in capsys.readouterr().out
    assert all(p.stat().st_mtime_ns != stamp[p.name] for p in (out / "runs" / "mnist1d-mlp").glob("*.csv"))
    assert _losses(out) == first

    sep = tmp_path / "sep"
    assert suite.main(["--preset", str(preset_file), "--out", str(sep), "--no-analysis", "--threads", "1",
                       "--mode", "separate", "--jobs", "2"]) == 0  # two processes at a time
    assert _losses(sep) == first  # interleaving changes the clock and nothing else
    manifests = [json.loads(p.read_text()) for p in (sep / "runs" / "mnist1d-mlp").glob("*.json")]
    assert {m["mode"] for m in manifests} == {"separate"}
