"""The runner and the suite under misuse: a run alone that fails, constructors refusing their settings,
two processes on one run, SIGTERM, malformed presets, a failing analysis, stages run out of order, and
the suite record's history across invocations."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from experiments import run
from experiments.runner import training as trainer
from experiments.runner.runlock import RunBusyError, acquire
from experiments.runner.spec import make_run_spec
from experiments.workloads.config import load_workload_dict
from experiments.workloads.models import registry as model_registry
from tests.support import REPO
from tests.support.committed_results import committed_results

TINY = ["data.train_subset=320", "data.test_subset=100", "eval_interval=2"]


pytestmark = pytest.mark.usefixtures("cached_mnist1d")


def _main(root: Path, optimizer: str | list[str], *extra: str, workload: str = "mnist1d-mlp", iters: int = 3) -> int:
    names = [optimizer] if isinstance(optimizer, str) else optimizer
    return run.main(["--workload", workload, "--optimizer", *names, "--seed", "0", "--max-iters", str(iters),
                     "--out", str(root / "runs"), "--checkpoint-dir", str(root / "ck"), "--no-progress",
                     "--threads", "1", "--set", *TINY, *extra])


def _workload_file(path: Path, **changes: object) -> Path:
    raw = {**load_workload_dict("mnist1d-mlp"), **changes}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return path


# ---- a run alone that fails ------------------------------------------------------------------------------------


def test_a_run_alone_that_fails_says_so_in_its_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SparseAdam refuses dense gradients at its first step: the manifest says failed with the error, the
    last line of stderr says which run failed and how, and the exit status is 1 (as in lockstep)."""
    assert _main(tmp_path, "torch.optim:SparseAdam") == 1
    (manifest_path,) = (tmp_path / "runs" / "mnist1d-mlp").glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["status"] == "failed" and manifest["mode"] == "separate"
    assert manifest["error"].startswith("RuntimeError: SparseAdam does not support dense gradients")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: run {manifest['run_id']} failed: RuntimeError: SparseAdam")
    assert not list((tmp_path / "runs" / "mnist1d-mlp").glob("*.lock"))  # released


# ---- constructors refusing their settings ------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer, settings, message", [
    ("torch.optim:RAdam", ["optimizer.lr=-1"], "optimizer 'torch.optim:RAdam' with arguments .*'lr': -1.*Invalid "
                                               "learning rate"),
    ("torch.optim:RAdam", ["optimizer.lr=abc"], r"'torch.optim:RAdam' with arguments .*'lr': 'abc'.*TypeError"),
    ("torch.optim:RAdam", ["optimizer.betas=0.9"], r"'torch.optim:RAdam' .*'betas': 0.9.*TypeError"),
    ("torch.optim:SGD", ["optimizer.nesterov=true", "optimizer.momentum=0"],
     r"'torch.optim:SGD' .*'nesterov': True.*Nesterov momentum requires a momentum"),
    ("sgd", ["model.args.hiddden=[3]"], r"mnist1d-mlp.model: model 'mlp' with args .*'hiddden': \[3\].*TypeError"),
    ("mlbfgs", ["optimizer.lr=-1"], r"optimizer 'mlbfgs' with settings .*'lr': -1.*lr must be"),
])
def test_constructor_refusals_are_configuration_errors_found_before_the_data(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, optimizer: str,
        settings: list[str], message: str) -> None:
    def no_data(*args: object) -> None:
        raise AssertionError("the data were loaded before the settings were checked")

    monkeypatch.setattr(trainer, "build_data", no_data)
    assert _main(tmp_path, optimizer, *settings) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "runs").exists()


def test_bad_model_args_in_a_workload_file_are_a_configuration_error(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = _workload_file(tmp_path / "w.json", name="bad-args", model={"name": "mlp", "args": {"hiddden": [3]}})
    assert _main(tmp_path, "sgd", workload=str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: bad-args.model: model 'mlp' with args {'hiddden': [3]}") and "Traceback" not in err


def test_a_refusal_on_the_meta_device_only_is_not_an_error(tmp_path: Path) -> None:
    """The check builds on the meta device; a builder that refuses only there is built again on the CPU."""
    name = f"cpu-only-{uuid.uuid4().hex[:6]}"

    def build(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        if torch.empty(0).device.type == "meta":
            raise ValueError("this builder needs real tensors")
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes))

    model_registry.register_model(name, build)
    try:
        path = _workload_file(tmp_path / "w.json", name="cpu-only", model={"name": name, "args": {}})
        assert _main(tmp_path, "sgd", workload=str(path)) == 0
    finally:
        model_registry.MODELS.builders.pop(name)


# ---- one process per run ------------------------------------------------------------------------------------------


def test_a_run_another_process_trains_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = make_run_spec("mnist1d-mlp", "sgd", 0, overrides=run.parse_overrides(TINY), max_iters=3)
    lock = acquire(spec.lock_path(tmp_path / "runs"), spec.run_id)
    assert lock is not None
    try:
        assert _main(tmp_path, "sgd") == 2
        assert capsys.readouterr().err.strip() == (
            f"error: run {spec.run_id} is being trained by another process (pid {os.getpid()}; lock "
            f"{spec.lock_path(tmp_path / 'runs')})")
        assert not spec.manifest_path(tmp_path / "runs").exists()
        assert _main(tmp_path, ["sgd", "adam"]) == 2  # in lockstep too, before anything trains
    finally:
        lock.release()
    assert _main(tmp_path, "sgd") == 0
    assert json.loads(spec.manifest_path(tmp_path / "runs").read_text())["status"] == "finished"
    assert not spec.lock_path(tmp_path / "runs").exists()


def test_the_lock_of_a_killed_process_is_free(tmp_path: Path) -> None:
    path = tmp_path / "w" / "r.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from experiments.runner.runlock import acquire; acquire(Path(sys.argv[1]), 'r'); "
                               "print('held', flush=True); time.sleep(60)", str(path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunBusyError, match=rf"run r is being trained by another process \(pid {holder.pid};"):
            acquire(path, "r")
    finally:
        holder.kill()
        holder.wait()
    assert path.exists()  # kill -9 left the file, but not the lock
    acquire(path, "r").release()
    assert not path.exists()


# ---- presets ------------------------------------------------------------------------------------------------------

GOOD_PRESET = {"name": "tiny", "runs": [{"workload": "mnist1d-mlp", "optimizers": ["sgd"], "max_iters": 2,
                                         "set": {"eval_interval": 1}}]}
GOOD_RUN = GOOD_PRESET["runs"][0]


@pytest.mark.parametrize("raw, message", [
    ({"runs": GOOD_PRESET["runs"]}, "missing required key 'name' (it names the record suite_<name>.json"),
    ({"name": "tiny"}, "missing required key 'runs' ([{\"workload\": ..., \"optimizers\": [...]}, ...])"),
    ({**GOOD_PRESET, "runs": []}, "'runs' must be a non-empty list of run entries"),
    ({**GOOD_PRESET, "runs": [{"optimizers": ["sgd"]}]},
     "runs[0]: missing required key 'workload' (a built-in workload's name or the path of a workload JSON file)"),
    ({**GOOD_PRESET, "runs": [{"workload": "mnist1d-mlp"}]}, "runs[0]: missing required key 'optimizers'"),
    ({**GOOD_PRESET, "seed": [0]}, "unknown key(s) ['seed']; allowed: ['ablation', 'analysis_args', 'description', "
                                   "'name', 'runs', 'seeds', 'sweep', 'tuning']"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "epoch": 1}]}, "runs[0]: unknown key(s) ['epoch']; allowed: ["),
    ([GOOD_PRESET], "a preset is a JSON object with the keys"),
    ({**GOOD_PRESET, "seeds": "0"}, "'seeds' must be a non-empty list of non-negative integers, e.g. [0, 1, 2], "
                                    "got '0'"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "seeds": [-1]}]}, "runs[0] (mnist1d-mlp): 'seeds' must be a non-empty"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "set": {"batch_sise": 3}}]},
     "runs[0] (mnist1d-mlp): 'set' {'batch_sise': 3}: workload: unknown key(s) ['batch_sise']; allowed keys: ["),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "set": {"data..dir": "x"}}]}, "'set' keys must be dotted names"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "set": ["batch_size=3"]}]}, "'set' must be an object of dotted workload"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "max_iters": -5}]},
     "runs[0] (mnist1d-mlp): 'max_iters' must be a positive integer or null, got -5"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "epochs": "2"}]}, "'epochs' must be a positive integer or null"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "optimizers": "sgd"}]}, "'optimizers' must be 'all' or a non-empty list"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "trial_fraction": 0}]}, "'trial_fraction' must be a number in (0, 1]"),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "workload": "nope"}]}, "runs[0]: workload must be one of ["),
    ({**GOOD_PRESET, "runs": [{**GOOD_RUN, "workload": "wl/none.json"}]},
     "runs[0]: workload 'wl/none.json': no such file (looked for ["),
    ({**GOOD_PRESET, "name": "my preset"}, "'name' must be letters, digits, '-' and '_'"),
    ({**GOOD_PRESET, "sweep": [1]}, "'sweep' must be a JSON object"),
    ('{"name": "tiny", "runs": [', "not valid JSON (Expecting value at line 1, column 27)"),
])
def test_malformed_presets_are_named_with_their_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     raw: object, message: str) -> None:
    from experiments.suite import cli as suite

    path = tmp_path / "p.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    assert suite.main(["--preset", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_preset_names_workload_files_relative_to_its_folder_then_the_current_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.suite import cli as suite
    from experiments.suite.presets import load_preset

    beside = _workload_file(tmp_path / "presets" / "wl" / "a.json", name="wl-beside")
    here = _workload_file(tmp_path / "cwd" / "wl" / "b.json", name="wl-here")
    both = _workload_file(tmp_path / "cwd" / "wl" / "a.json", name="wl-shadowed")  # the preset's folder wins
    preset_path = tmp_path / "presets" / "p.json"
    preset_path.write_text(json.dumps({**GOOD_PRESET, "runs": [{**GOOD_RUN, "workload": "wl/a.json"},
                                                               {**GOOD_RUN, "workload": "wl/b.json"}]}))
    monkeypatch.chdir(tmp_path / "cwd")
    preset = load_preset(str(preset_path))
    assert [(e.workload, e.workload_file) for e in preset.runs] == [
        ("wl-beside", str(beside.resolve())), ("wl-here", str(here.resolve()))]
    assert both.is_file()
    out = tmp_path / "out"
    assert suite.main(["--preset", str(preset_path), "--out", str(out), "--dry-run", "--workloads", "wl-here"]) == 0
    text = capsys.readouterr().out
    spec = make_run_spec(str(here), "sgd", 0, overrides={"eval_interval": 1}, max_iters=2)
    assert f"{spec.run_id}: would run --workload {here.resolve()} " in text
    assert "wl-beside" not in text


# ---- the suite's stages and record --------------------------------------------------------------------------------


def test_a_failing_analysis_fails_the_suite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.suite import cli as suite

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(GOOD_PRESET))
    out = tmp_path / "empty"
    assert suite.main(["--preset", str(path), "--out", str(out), "--stages", "analysis"]) == 1
    assert "[suite] error: the analysis failed (exit 2)" in capsys.readouterr().err
    record = json.loads((out / "suite_tiny.json").read_text())
    assert record["invocations"][-1]["stages"]["analysis"]["returncode"] == 2


SWEEP_PRESET = {**GOOD_PRESET, "runs": [{**GOOD_RUN, "optimizers": ["sgd", "adam"]}],
                "sweep": {"seed": 0, "grids": {"sgd": [0.01, 0.1], "adam": [0.001, 0.01]}}}
TUNING_PRESET = {**GOOD_PRESET, "runs": [{**GOOD_RUN, "optimizers": ["sgd", "adam"]}],
                 "tuning": {"trials": 2, "seed": 0, "spaces": {"sgd": {"lr": {"log_uniform": [0.01, 0.3]}},
                                                              "adam": {"lr": {"log_uniform": [1e-3, 1e-2]}}}}}


@pytest.mark.parametrize("raw, stages, first", [
    (SWEEP_PRESET, ["final"], "--stages sweep final"),
    (SWEEP_PRESET, ["final", "analysis"], "--stages sweep final"),
    (TUNING_PRESET, ["final"], "--stages trials final"),
])
def test_finals_before_their_choice_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: dict,
                                                stages: list[str], first: str) -> None:
    from experiments.suite import cli as suite

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(raw))
    out = tmp_path / "out"
    for extra in (["--dry-run"], []):
        assert suite.main(["--preset", str(path), "--out", str(out), "--stages", *stages, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: preset tiny: ") and "['mnist1d-mlp/sgd', 'mnist1d-mlp/adam']" in err, err
        assert f"run the {'sweep' if 'sweep' in raw else 'trials'} first ({first})" in err
    assert not out.exists()  # nothing ran, nothing recorded


def test_the_record_keeps_every_invocation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A preset trained, then rerun (everything skipped): the record lists both commands, their runs and
    seconds, and the seconds of both; a record of the one-command layout becomes the first invocation."""
    from experiments.suite import cli as suite
    from experiments.suite.stages.record import invocations

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(GOOD_PRESET))
    out = tmp_path / "out"
    out.mkdir()
    # a record of the one-command layout, as results/examples/suite_radam_nadam.json was until 2026-12-08
    legacy = json.loads((REPO / "tests" / "data" / "suite_record_one_command.json").read_text())
    (out / "suite_tiny.json").write_text(json.dumps({**legacy, "preset": "tiny"}))
    base = ["--preset", str(path), "--out", str(out), "--no-analysis", "--threads", "1"]
    assert suite.main(base) == 0
    assert suite.main(base) == 0
    capsys.readouterr()
    record = json.loads((out / "suite_tiny.json").read_text())
    old, first, second = record["invocations"]
    assert old["command"] == legacy["command"] and old["stages"] == legacy["stages"]
    assert [r["status"] for r in first["stages"]["grid"]["runs"]] == ["finished"]
    assert [r["status"] for r in second["stages"]["grid"]["runs"]] == ["skipped (finished)"]
    assert all(c["command"].startswith("python -m experiments.suite --preset") for c in (first, second))
    assert all(c["git_commit"] and c["end_time"] and c["failed_runs"] == 0 for c in (first, second))
    assert record["seconds"] == pytest.approx(legacy["seconds"] + first["seconds"] + second["seconds"], abs=1e-3)
    assert record["preset"] == "tiny" and "command" not in record and "stages" not in record
    assert invocations(record) == record["invocations"]


def test_committed_suite_records_are_read_as_invocations() -> None:
    from experiments.suite.stages.record import command_seconds, invocations

    names = [n for n in committed_results() if Path(n).name.startswith("suite_") and n.endswith(".json")]
    assert "results/quick/suite_quick.json" in names and "results/examples/suite_radam_nadam.json" in names
    for name in names:  # a record keeps every invocation (a resumed or partly rerun preset has several)
        commands = invocations(json.loads((REPO / name).read_text()))
        assert commands, name
        for command in commands:
            assert command["command"].startswith("python -m experiments.suite") and command["start_time"], name
            assert "preset" not in command and "description" not in command
            # a long preset's record is committed while its command still runs (or after it was stopped
            # at a session's end): such an invocation has no end and counts 0 seconds
            assert (command_seconds(command) > 0) == bool(command.get("end_time")), name


# ---- SIGTERM -------------------------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads child processes from /proc (Linux)")
def test_sigterm_stops_the_suite_and_its_runner(tmp_path: Path) -> None:
    path = tmp_path / "long.json"
    path.write_text(json.dumps({**GOOD_PRESET, "runs": [{**GOOD_RUN, "max_iters": 100000}]}))
    out = tmp_path / "out"
    suite_proc = subprocess.Popen([sys.executable, "-m", "experiments.suite", "--preset", str(path), "--out", str(out),
                                   "--no-analysis", "--threads", "1"], cwd=REPO, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / "runs" / "mnist1d-mlp").glob("*.json")):  # the runner is training
            assert suite_proc.poll() is None and time.monotonic() < deadline, suite_proc.stderr.read()
            time.sleep(0.2)
        assert list((out / "runs" / "mnist1d-mlp").glob("*.lock"))  # and holds its run
        (runner,) = _children(suite_proc.pid)
        suite_proc.send_signal(signal.SIGTERM)
        assert suite_proc.wait(timeout=60) == 143
        deadline = time.monotonic() + 30
        while _alive(runner) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(runner)
        assert f"stopping 1 running process(es): {runner}" in suite_proc.stderr.read()
        (manifest,) = (out / "runs" / "mnist1d-mlp").glob("*.json")
        assert json.loads(manifest.read_text())["status"] == "running"  # a rerun resumes it
        assert not list((out / "runs" / "mnist1d-mlp").glob("*.lock"))  # the runner released its lock
    finally:
        if suite_proc.poll() is None:
            suite_proc.kill()
            suite_proc.wait()


# ---- a run recorded under other defaults -------------------------------------------------------------------------


def _record_other_default(root: Path, status: str) -> Path:
    """Train mlbfgs 3 iterations, then make its manifest say it ran with another ``blocks`` (as after a
    default changed: the run id, which hashes only the settings a run sets, stays the same)."""
    assert _main(root, "mlbfgs") == 0
    path = next((root / "runs").glob("*/*.json"))
    manifest = json.loads(path.read_text())
    assert manifest["optimizer_config"]["blocks"] == "model"
    manifest["optimizer_config"]["blocks"] = "layer"
    manifest["status"] = status
    path.write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("status", ["finished", "running"])
def test_a_run_recorded_under_other_defaults_is_neither_skipped_nor_resumed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], status: str) -> None:
    path = _record_other_default(tmp_path, status)
    capsys.readouterr()
    assert _main(tmp_path, "mlbfgs") == 2
    err = capsys.readouterr().err
    assert "blocks: recorded 'layer', now 'model'" in err and "--force" in err, err
    assert json.loads(path.read_text())["optimizer_config"]["blocks"] == "layer"  # nothing overwritten
    assert _main(tmp_path, "mlbfgs", "--force") == 0
    assert json.loads(path.read_text())["optimizer_config"]["blocks"] == "model"


def test_the_suite_reports_a_run_recorded_under_other_defaults(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.suite import cli as suite

    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps({"name": "tiny", "runs": [{"workload": "mnist1d-mlp", "optimizers": ["mlbfgs"],
                                                             "max_iters": 2, "set": {"eval_interval": 1}}]}))
    base = ["--preset", str(preset), "--out", str(tmp_path / "out"), "--no-analysis", "--threads", "1"]
    assert suite.main(base) == 0
    path = next((tmp_path / "out" / "runs").glob("*/*.json"))
    manifest = json.loads(path.read_text())
    manifest["optimizer_config"]["blocks"] = "layer"
    path.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert suite.main(base) == 1  # reported as failed, not skipped as done
    out = capsys.readouterr().out
    assert "error: " in out and "blocks: recorded 'layer', now 'model'" in out and "finished, skipped" not in out
    assert "--retrain-stale" in out
    assert suite.main([*base, "--retrain-stale", "--dry-run"]) == 0
    assert json.loads(path.read_text())["optimizer_config"]["blocks"] == "layer"  # a dry run moves nothing
    assert suite.main([*base, "--retrain-stale"]) == 0
    assert "set aside in" in capsys.readouterr().out
    assert json.loads(path.read_text())["optimizer_config"]["blocks"] == "model"  # retrained under today's default
    (old,) = (tmp_path / "out" / "stale").glob(f"*/runs/{path.parent.name}/{path.name}")
    assert json.loads(old.read_text())["optimizer_config"]["blocks"] == "layer"  # the stale record kept
    assert suite.main(base) == 0 and "finished, skipped" in capsys.readouterr().out


def test_retrain_stale_sets_aside_runs_the_plan_no_longer_names(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A final whose settings a new tuning no longer chooses has another id than the new final: the sweep sets
    it aside too, so the folder holds one configuration of the optimizer."""
    from experiments.suite import cli as suite

    preset = tmp_path / "tiny.json"
    out = tmp_path / "out"

    def write(lr: float) -> list[str]:
        preset.write_text(json.dumps({"name": "tiny", "runs": [{"workload": "mnist1d-mlp", "optimizers": ["mlbfgs"],
                                                                 "max_iters": 2,
                                                                 "set": {"eval_interval": 1, "optimizer.lr": lr}}]}))
        return ["--preset", str(preset), "--out", str(out), "--no-analysis", "--threads", "1"]

    assert suite.main(write(0.01)) == 0
    (old,) = (out / "runs").glob("*/*.json")
    manifest = json.loads(old.read_text())
    manifest["optimizer_config"]["blocks"] = "layer"
    old.write_text(json.dumps(manifest))
    capsys.readouterr()
    assert suite.main([*write(0.02), "--retrain-stale", "--dry-run"]) == 0
    assert "would be set aside" in capsys.readouterr().out and old.exists()
    assert suite.main([*write(0.02), "--retrain-stale"]) == 0
    assert not old.exists() and not old.with_suffix(".csv").exists()
    assert len(list((out / "stale").glob(f"*/runs/{old.parent.name}/{old.name}"))) == 1
    (new,) = (out / "runs").glob("*/*.json")
    assert new.name != old.name


def test_a_setting_added_after_a_run_is_not_drift(tmp_path: Path) -> None:
    from experiments.runner.drift import config_drift

    spec = make_run_spec("mnist1d-mlp", "mlbfgs", 0)
    recorded = {k: v for k, v in spec.optimizer_config().items() if k != "direction_norm"}
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"optimizer_config": recorded}))
    assert config_drift(spec, path) == {}
    path.write_text(json.dumps({"optimizer_config": {**recorded, "lr": 123.0}}))
    assert set(config_drift(spec, path)) == {"lr"}


def _noop() -> None:
    return None


def test_a_callable_default_is_not_drift_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A manifest records a callable default as its text, whose memory address differs in every process."""
    from experiments.runner import drift

    spec = make_run_spec("mnist1d-mlp", "sgd", 0)
    config = {**spec.optimizer_config(), "transform": _noop}
    monkeypatch.setattr(type(spec), "optimizer_config", lambda self: config)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"optimizer_config": {**config, "transform": "<function _noop at 0x7f0000000000>"}}))
    assert drift.config_drift(spec, path) == {}


def test_a_missing_optional_library_is_not_reported_as_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.runner import drift

    spec = make_run_spec("mnist1d-mlp", "sgd", 0)

    def missing(self: object) -> dict:
        raise ModuleNotFoundError("optimizer 'soap' needs pytorch-optimizer")

    monkeypatch.setattr(type(spec), "optimizer_config", missing)
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"optimizer_config": {"lr": 1.0}}))
    assert drift.config_drift(spec, path) == {}
