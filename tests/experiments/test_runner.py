"""The runner end to end on tiny subsets: CSV schema and rows, manifest, skip, run ids, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from experiments import run
from experiments.runner.csvlog import RUN_COLUMNS
from experiments.runner.spec import make_run_spec
from experiments.workloads.config import available_workloads
from tests.support import REPO
from tests.support.committed_results import committed_results

SCHEMA = [
    "run_id", "workload", "optimizer", "seed", "kind", "epoch", "iteration", "train_loss", "lr", "wall_s",
    "grad_evals", "test_loss", "test_acc", "eval_s", "cpu_s",
]  # DEVELOPERS.md, written out independently of the code under test

TINY = ["data.train_subset=1280", "data.test_subset=200", "eval_interval=8", "batch_size=64"]


def _run(tmp_path: Path, optimizer: str, *extra: str) -> int:
    return run.main([
        "--workload", "fmnist-cnn", "--optimizer", optimizer, "--seed", "3", "--max-iters", "20",
        "--out", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress",
        "--threads", str(torch.get_num_threads()), "--set", *TINY, *extra,
    ])


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_runner_writes_schema_rows_and_manifest(tmp_path: Path, optimizer: str) -> None:
    assert _run(tmp_path, optimizer) == 0
    spec = make_run_spec("fmnist-cnn", optimizer, 3, overrides=run.parse_overrides(TINY), max_iters=20)
    assert spec.run_id.startswith(f"fmnist-cnn__{optimizer}__s3__")
    csv_path = tmp_path / "runs" / "fmnist-cnn" / f"{spec.run_id}.csv"
    header, rows = _rows(csv_path)
    assert header == SCHEMA == list(RUN_COLUMNS)

    train = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [int(r["iteration"]) for r in train] == list(range(1, 21))
    assert [int(r["iteration"]) for r in evals] == [0, 8, 16, 20]
    assert len(rows) == len(train) + len(evals)
    for r in rows:
        assert (r["run_id"], r["workload"], r["optimizer"], r["seed"]) == (spec.run_id, "fmnist-cnn", optimizer, "3")
    for r in train:
        assert r["test_loss"] == r["test_acc"] == r["eval_s"] == ""
        assert float(r["train_loss"]) > 0 and float(r["lr"]) > 0
        assert int(r["grad_evals"]) == int(r["iteration"])  # one gradient per step for sgd / adam
    for r in evals:
        assert r["train_loss"] == ""
        assert 0.0 <= float(r["test_acc"]) <= 1.0 and float(r["test_loss"]) > 0 and float(r["eval_s"]) > 0
    walls = [float(r["wall_s"]) for r in train]
    assert walls == sorted(walls) and walls[0] > 0
    # 1280 examples / 64 per batch = 20 iterations per epoch: the last train row is epoch 1.0
    assert float(train[-1]["epoch"]) == pytest.approx(1.0)
    # cosine from lr to lr * 1e-3 over the 20 iterations
    lr0 = {"sgd": 0.05, "adam": 1e-3}[optimizer]
    assert float(train[0]["lr"]) == pytest.approx(lr0)
    assert float(train[-1]["lr"]) == pytest.approx(lr0 * 1e-3)
    # training learns something even in 20 steps
    assert float(evals[-1]["test_loss"]) < float(evals[0]["test_loss"])

    manifest = json.loads((csv_path.with_suffix(".json")).read_text())
    for key in ("config", "git_commit", "torch_version", "device", "world_size", "command", "start_time",
                "end_time", "status", "total_s", "optimizer_config"):
        assert key in manifest, key
    assert manifest["status"] == "finished" and manifest["outcome"] == "completed"
    assert manifest["world_size"] == 1 and manifest["torch_version"] == torch.__version__
    assert manifest["config"]["data"]["train_subset"] == 1280
    assert manifest["optimizer_config"]["lr"] == lr0
    assert manifest["total_s"] >= float(train[-1]["wall_s"])
    assert "--optimizer" in manifest["command"]
    # no checkpoint left behind by a finished run, no curvature file for first-order methods
    assert not any((tmp_path / "ck").rglob("*.pt"))
    assert not (csv_path.parent / f"{spec.run_id}.curvature.csv").exists()


def test_finished_run_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(tmp_path, "sgd") == 0
    csv_path = next((tmp_path / "runs").rglob("*.csv"))
    before = csv_path.read_bytes()
    capsys.readouterr()
    assert _run(tmp_path, "sgd") == 0
    assert "skipped" in capsys.readouterr().out
    assert csv_path.read_bytes() == before


def test_run_id_hash_tracks_non_default_overrides() -> None:
    base = make_run_spec("fmnist-cnn", "sgd", 0)
    assert base.run_id == "fmnist-cnn__sgd__s0"
    same = make_run_spec("fmnist-cnn", "sgd", 0, overrides={"batch_size": 128, "data.dir": "/elsewhere"})
    assert same.run_id == base.run_id  # default value and data location do not change the identity
    lr = make_run_spec("fmnist-cnn", "sgd", 0, overrides={"optimizer.lr": 0.2})
    lr2 = make_run_spec("fmnist-cnn", "sgd", 0, overrides={"optimizer.lr": 0.3})
    assert len({base.run_id, lr.run_id, lr2.run_id}) == 3
    assert lr.optimizer_settings["lr"] == 0.2
    assert make_run_spec("fmnist-cnn", "sgd", 0, max_iters=5).run_id != base.run_id
    assert make_run_spec("fmnist-cnn", "sgd", 0, epochs=2).run_id != base.run_id


def test_committed_runs_keep_their_run_ids() -> None:
    """Every manifest committed under results/ names the run id its recorded workload, optimizer, seed,
    overrides and iteration cap resolve to today (reruns skip or resume them instead of starting new runs)."""
    checked = 0
    for name in committed_results():
        if not name.endswith(".json") or "/runs/" not in name or not (REPO / name).is_file():
            continue
        manifest = json.loads((REPO / name).read_text())
        if not isinstance(manifest, dict) or "overrides" not in manifest:
            continue
        spec = make_run_spec(manifest["config"].get("file") or manifest["workload"], manifest["optimizer"],
                             manifest["seed"], overrides=manifest["overrides"], max_iters=manifest.get("max_iters"))
        assert spec.run_id == manifest["run_id"], name
        checked += 1
    assert checked > 100  # the committed benchmark runs, hashed ids among them


def test_bad_arguments_name_the_allowed_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="workload must be one of") as err:
        make_run_spec("no-such-workload", "sgd", 0)
    for name in available_workloads():
        assert name in str(err.value)
    assert _run(tmp_path, "no-such-optimizer") == 2
    assert "optimizer must be one of" in capsys.readouterr().err
    assert _run(tmp_path, "sgd", "batch_sise=3") == 2
    assert "unknown key(s) ['batch_sise']" in capsys.readouterr().err
    with pytest.raises(ValueError, match="schedule.kind must be one of"):
        make_run_spec("fmnist-cnn", "sgd", 0, overrides={"schedule.kind": "step"})


def test_log_interval_thins_train_rows_only(tmp_path: Path) -> None:
    def run_with(interval: int, root: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        assert run.main([
            "--workload", "mnist1d-mlp", "--optimizer", "mlbfgs", "--seed", "0", "--max-iters", "10",
            "--out", str(root), "--no-progress", "--threads", "1",
            "--set", "eval_interval=5", f"log_interval={interval}", "optimizer.update_period=2",
        ]) == 0
        (csv_path,) = [p for p in (root / "mnist1d-mlp").glob("*.csv") if not p.name.endswith(".curvature.csv")]
        (curv_path,) = (root / "mnist1d-mlp").glob("*.curvature.csv")
        return _rows(csv_path)[1], _rows(curv_path)[1]

    thin, thin_curv = run_with(4, tmp_path / "thin")
    full, full_curv = run_with(1, tmp_path / "full")
    assert [int(r["iteration"]) for r in thin if r["kind"] == "train"] == [4, 8, 10]  # and the last one
    assert [int(r["iteration"]) for r in thin if r["kind"] == "eval"] == [0, 5, 10]
    by_it = {r["iteration"]: r["train_loss"] for r in full if r["kind"] == "train"}
    assert all(by_it[r["iteration"]] == r["train_loss"] for r in thin if r["kind"] == "train")
    assert thin_curv == full_curv and {int(r["iteration"]) for r in thin_curv} - {4, 8, 10}  # every pair kept
