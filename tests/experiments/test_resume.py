"""Kill a run with SIGKILL after a checkpoint, rerun it: no duplicated or missing rows, same numbers."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO
from tests.support.process_helpers import kill_when

ITERS = 80


def _cmd(root: Path, optimizer: str) -> list[str]:
    extra = ["optimizer.update_period=10"] if optimizer == "mlbfgs" else []
    return [
        sys.executable, "-m", "experiments.run", "--workload", "fmnist-cnn", "--optimizer", optimizer,
        "--seed", "1", "--max-iters", str(ITERS), "--out", str(root / "runs"), "--checkpoint-dir",
        str(root / "ck"), "--threads", "1", "--no-progress", "--checkpoint-every", "10", "--flush-rows", "1",
        "--set", "data.train_subset=2560", "data.test_subset=200", "batch_size=32", "eval_interval=15",
        *extra,
    ]


def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _files(root: Path) -> dict[str, Path]:
    out = {}
    for p in (root / "runs").rglob("*"):
        if p.name.endswith(".curvature.csv"):
            out["curvature"] = p
        elif p.suffix == ".csv":
            out["csv"] = p
        elif p.suffix == ".json":
            out["manifest"] = p
    return out


def _pointer(root: Path) -> int:
    found = list((root / "ck").rglob("latest.json"))
    if not found:
        return -1
    try:
        return json.loads(found[0].read_text())["iteration"]
    except (json.JSONDecodeError, KeyError):
        return -1


def _last_train_iteration(csv_path: Path) -> int:
    if not csv_path.exists():
        return -1
    its = [int(r["iteration"]) for r in _read(csv_path) if r["kind"] == "train" and r["iteration"]]
    return max(its, default=-1)


def _kill_after_checkpoint(root: Path, optimizer: str) -> int:
    """Start the run; SIGKILL it once a checkpoint >= 20 exists and rows past it are on disk."""
    seen = {"ck": -1}

    def ready() -> bool:
        seen["ck"] = _pointer(root)
        csv_path = _files(root).get("csv")
        return seen["ck"] >= 20 and csv_path is not None and _last_train_iteration(csv_path) >= seen["ck"] + 3

    kill_when(_cmd(root, optimizer), REPO, ready, 120, "checkpoint")
    return seen["ck"]


@pytest.mark.parametrize("optimizer", ["sgd", "mlbfgs"])
def test_killed_run_resumes_without_duplicates_and_matches_uninterrupted(tmp_path: Path, optimizer: str) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    ck = _kill_after_checkpoint(killed, optimizer)
    files = _files(killed)
    assert json.loads(files["manifest"].read_text())["status"] == "running"
    assert ITERS > _last_train_iteration(files["csv"]) > ck  # rows past the checkpoint that must be dropped

    subprocess.run(_cmd(killed, optimizer), cwd=REPO, check=True, capture_output=True)
    subprocess.run(_cmd(clean, optimizer), cwd=REPO, check=True, capture_output=True)
    resumed, reference = _read(files["csv"]), _read(_files(clean)["csv"])

    train = [int(r["iteration"]) for r in resumed if r["kind"] == "train"]
    evals = [int(r["iteration"]) for r in resumed if r["kind"] == "eval"]
    assert train == list(range(1, ITERS + 1))
    assert evals == sorted({0, *range(15, ITERS + 1, 15), ITERS})

    def numbers(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
        cols = ("kind", "epoch", "iteration", "train_loss", "lr", "grad_evals", "test_loss", "test_acc")
        return [tuple(r[c] for c in cols) for r in rows]

    assert numbers(resumed) == numbers(reference)  # bit-identical losses on the same machine and threads

    manifest = json.loads(files["manifest"].read_text())
    assert manifest["status"] == "finished"
    assert len(manifest["attempts"]) == 2 and manifest["attempts"][1]["resumed_from_iteration"] == ck

    if optimizer == "mlbfgs":
        curv, curv_ref = _read(files["curvature"]), _read(_files(clean)["curvature"])
        assert len(curv) >= ITERS // 10 - 2  # a pair every 10 iterations
        assert [tuple(r.values()) for r in curv] == [tuple(r.values()) for r in curv_ref]
