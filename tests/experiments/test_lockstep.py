"""Lockstep: several runs in one process give the same numbers as separate runs, resume after a kill,
and keep their own RNG streams; bad groups are refused."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import run
from experiments.runner import lockstep
from experiments.runner.dist_context import DistContext
from experiments.runner.lockstep import check_group, train_lockstep
from experiments.runner.spec import make_run_spec
from experiments.runner.training import RunOptions
from tests.support import REPO
from tests.support.process_helpers import kill_when

ITERS = 24
# a tiny ViT with dropout: its masks come from the global RNG, so each run's stream must be its own
TINY_VIT = [
    "data.train_subset=640", "data.test_subset=100", "batch_size=32", "eval_interval=7", "checkpoint_interval=5",
    "model.args.hidden_size=32", "model.args.num_layers=1", "model.args.num_heads=2", "model.args.dropout=0.3",
    "schedule.warmup_iters=0", "optimizers.mlbfgs.update_period=4",
]
OPTIMIZERS = ["sgd", "adam", "mlbfgs"]
NUMBERS = ("kind", "epoch", "iteration", "train_loss", "lr", "grad_evals", "test_loss", "test_acc")


def _args(root: Path, *optimizers: str, iters: int = ITERS) -> list[str]:
    return ["--workload", "fmnist-vit", "--optimizer", *optimizers, "--seed", "2", "--max-iters", str(iters),
            "--out", str(root), "--threads", "1", "--no-progress", "--flush-rows", "1", "--set", *TINY_VIT]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _numbers(path: Path) -> list[tuple[str, ...]]:
    return [tuple(r[c] for c in NUMBERS) for r in _read(path)]


def _run_files(root: Path) -> dict[str, Path]:
    return {p.name: p for p in (root / "fmnist-vit").glob("*.csv")}


@pytest.fixture(scope="module")
def separate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("separate")
    for name in OPTIMIZERS:
        assert run.main(_args(root, name)) == 0
    return root


def test_lockstep_numbers_equal_separate_runs(tmp_path: Path, separate: Path) -> None:
    assert run.main(_args(tmp_path, *OPTIMIZERS)) == 0
    mine, theirs = _run_files(tmp_path), _run_files(separate)
    assert sorted(mine) == sorted(theirs) and len(mine) == 4  # 3 run CSVs + the mlbfgs curvature CSV
    for name, path in mine.items():
        if name.endswith(".curvature.csv"):
            assert [tuple(r.values()) for r in _read(path)] == [tuple(r.values()) for r in _read(theirs[name])]
            assert len(_read(path)) >= 3
        else:
            assert _numbers(path) == _numbers(theirs[name])
            rows = [r for r in _read(path) if r["kind"] == "train"]
            assert [int(r["iteration"]) for r in rows] == list(range(1, ITERS + 1))
            cpu = [float(r["cpu_s"]) for r in rows]
            assert cpu[0] > 0 and cpu == sorted(cpu)  # process CPU seconds beside the wall seconds

    ids = sorted(p.stem for p in (tmp_path / "fmnist-vit").glob("*.json"))
    for rid in ids:
        manifest = json.loads((tmp_path / "fmnist-vit" / f"{rid}.json").read_text())
        assert manifest["mode"] == "lockstep" and manifest["status"] == "finished"
        assert sorted(manifest["lockstep"]["group"]) == ids
        assert manifest["threads"] == 1 and manifest["cpu_s"] > 0
        # the command reproduces this run alone: one optimizer, the same settings
        cmd = manifest["command"].split()
        assert cmd[cmd.index("--optimizer") + 1] == manifest["optimizer"]
        assert cmd[cmd.index("--optimizer") + 2].startswith("--")
        assert "--threads" in cmd and "model.args.dropout=0.3" in cmd


def test_without_own_rng_streams_the_numbers_differ(tmp_path: Path, separate: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # control: the equality above needs the per-run RNG streams (dropout draws from the global RNG)
    monkeypatch.setattr(lockstep, "set_torch_rng_state", lambda state, device: None)
    assert run.main(_args(tmp_path, *OPTIMIZERS)) == 0
    differ = [name for name, path in _run_files(tmp_path).items()
              if not name.endswith(".curvature.csv") and _numbers(path) != _numbers(_run_files(separate)[name])]
    assert differ


def _pointers(root: Path) -> list[int]:
    out = []
    for p in (root / "checkpoints").rglob("latest.json"):
        try:
            out.append(json.loads(p.read_text())["iteration"])
        except (json.JSONDecodeError, KeyError):
            out.append(-1)
    return out


def test_killed_lockstep_resumes_and_catches_up(tmp_path: Path, separate: Path) -> None:
    cmd = [sys.executable, "-m", "experiments.run", *_args(tmp_path, *OPTIMIZERS)]

    def ready() -> bool:
        ck = _pointers(tmp_path)
        return len(ck) == 3 and min(ck) >= 10

    kill_when(cmd, REPO, ready, 180, "checkpoints of all three runs")
    # one run loses its checkpoint (as if killed before its first save): it restarts from 0 and the
    # driver lets it catch up with the others before they move on
    sgd_ck = next((tmp_path / "checkpoints" / "fmnist-vit").glob("fmnist-vit__sgd__*"))
    for p in sgd_ck.iterdir():
        p.unlink()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    for name, path in _run_files(tmp_path).items():
        if name.endswith(".curvature.csv"):
            continue
        assert _numbers(path) == _numbers(_run_files(separate)[name]), name
        manifest = json.loads(path.with_suffix(".json").read_text())
        assert manifest["status"] == "finished"
        resumed = manifest["attempts"][-1]["resumed_from_iteration"]
        assert resumed is None if "__sgd__" in name else resumed >= 10
    curv = next(n for n in _run_files(tmp_path) if n.endswith(".curvature.csv"))
    assert _read(_run_files(tmp_path)[curv]) == _read(_run_files(separate)[curv])


def test_finished_runs_are_skipped_and_force_retrains(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run.main(_args(tmp_path, "sgd", iters=6)) == 0
    sgd_csv = next((tmp_path / "fmnist-vit").glob("*__sgd__*.csv"))
    before = sgd_csv.stat().st_mtime_ns
    capsys.readouterr()
    assert run.main(_args(tmp_path, "sgd", "adam", iters=6)) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["status"] for x in lines] == ["skipped (finished)", "finished"]
    assert sgd_csv.stat().st_mtime_ns == before
    assert run.main([*_args(tmp_path, "sgd", "adam", iters=6), "--force"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["status"] for x in lines] == ["finished", "finished"]
    assert sgd_csv.stat().st_mtime_ns != before


def test_bad_groups_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = make_run_spec("mnist1d-mlp", "sgd", 0)
    with pytest.raises(ValueError, match="share the seed"):
        check_group([a, make_run_spec("mnist1d-mlp", "adam", 1)])
    with pytest.raises(ValueError, match="share the data"):
        check_group([a, make_run_spec("mnist1d-mlp", "adam", 0, overrides={"data.train_subset": 100})])
    with pytest.raises(ValueError, match="same run twice"):
        check_group([a, a])
    with pytest.raises(ValueError, match="torchrun"):
        train_lockstep([a, make_run_spec("mnist1d-mlp", "adam", 0)], RunOptions(out=tmp_path),
                       DistContext(world_size=2))
    assert run.main(["--workload", "mnist1d-mlp", "--optimizer", "sgd", "sgd", "--out", str(tmp_path)]) == 2
    assert "same run twice" in capsys.readouterr().err
    specs = tmp_path.parent / f"{tmp_path.name}-specs"  # outside the runs folder, which must stay empty
    specs.mkdir()
    (specs / "bad.json").write_text("not json")
    assert run.main(["--spec", str(specs / "bad.json"), "--out", str(tmp_path)]) == 2
    assert "--spec" in capsys.readouterr().err
    (specs / "short.json").write_text('{"workload": "mnist1d-mlp"}')
    assert run.main(["--spec", str(specs / "short.json"), "--out", str(tmp_path)]) == 2
    assert "optimizer" in capsys.readouterr().err
    assert run.main(["--workload", "mnist1d-mlp", "--optimizer", "sgd", "nope", "--out", str(tmp_path)]) == 2
    assert "optimizer must be one of" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained, nothing written


def test_a_run_drawing_from_python_or_numpy_rng_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # lockstep swaps only torch's generators per turn; a draw from the host RNGs must stop the group loudly
    import numpy as np

    from experiments.runner.training import Run

    original = Run.advance

    def drawing_advance(self: Run) -> None:
        original(self)
        if self.spec.optimizer == "adam":
            np.random.rand()

    monkeypatch.setattr(Run, "advance", drawing_advance)
    monkeypatch.setattr(lockstep, "HOST_RNG_CHECK_EVERY", 4)
    specs = [make_run_spec("mnist1d-mlp", name, 0, max_iters=10) for name in ("sgd", "adam")]
    with pytest.raises(lockstep.HostRngDrawError, match="NumPy"):
        train_lockstep(specs, RunOptions(out=tmp_path / "o", checkpoint_root=tmp_path / "ck"), DistContext())


@pytest.mark.parametrize("error, status, outcome", [
    (torch.linalg.LinAlgError("eigh failed to converge"), "finished", "diverged"),  # the optimizer's failure
    (RuntimeError("a bug"), "failed", None),  # anything else: recorded, retried by a rerun
])
def test_one_failing_run_does_not_stop_the_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 error: Exception, status: str, outcome: str | None) -> None:
    from experiments.runner.training import Run

    original = Run.advance

    def breaking_advance(self: Run) -> None:
        if self.spec.optimizer == "adam" and self.iteration == 5:
            raise error
        original(self)

    monkeypatch.setattr(Run, "advance", breaking_advance)
    specs = [make_run_spec("mnist1d-mlp", name, 0, max_iters=12) for name in ("sgd", "adam")]
    summaries = train_lockstep(specs, RunOptions(out=tmp_path / "o", checkpoint_root=tmp_path / "ck"), DistContext())
    assert summaries[0]["status"] == "finished" and summaries[0]["iterations"] == 12
    assert summaries[1]["status"] == status and type(error).__name__ in summaries[1]["error"]
    manifest = json.loads((tmp_path / "o" / "mnist1d-mlp" / f"{specs[1].run_id}.json").read_text())
    assert manifest["status"] == status and manifest.get("outcome") == outcome


@pytest.mark.parametrize("ending", ["diverged", "shorter"])
def test_a_run_that_ends_early_is_finished_before_the_group_is_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ending: str) -> None:
    """A diverged (or shorter) run's manifest says finished as soon as it ends: an interruption of the
    group afterwards (a kill at the end of a session) must not make a rerun train it again."""
    from experiments.runner.training import Run

    original = Run.advance

    def advance(self: Run) -> None:
        if ending == "diverged" and self.spec.optimizer == "adam" and self.iteration == 3:
            raise FloatingPointError("loss is nan")
        if self.spec.optimizer == "sgd" and self.iteration == 8:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(Run, "advance", advance)
    specs = [make_run_spec("mnist1d-mlp", "sgd", 0, max_iters=12),
             make_run_spec("mnist1d-mlp", "adam", 0, max_iters=12 if ending == "diverged" else 5)]
    opts = RunOptions(out=tmp_path / "o", checkpoint_root=tmp_path / "ck")
    with pytest.raises(KeyboardInterrupt):
        train_lockstep(specs, opts, DistContext())
    manifests = [json.loads((tmp_path / "o" / "mnist1d-mlp" / f"{s.run_id}.json").read_text()) for s in specs]
    assert manifests[0]["status"] == "running"  # interrupted: resumed by a rerun
    assert manifests[1]["status"] == "finished"
    assert manifests[1]["outcome"] == ("diverged" if ending == "diverged" else "completed")
    assert manifests[1]["iterations_done"] == (3 if ending == "diverged" else 5)
