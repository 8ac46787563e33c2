"""The compute table (analysis/compute.py): CPU-hours and ms per iteration from run manifests."""

import json
from pathlib import Path

import pytest

from analysis.compute import compute_markdown, compute_summary, load_compute
from analysis.load import load_results
from experiments.runner.csvlog import RUN_COLUMNS


def manifest(root: Path, folder: str, run_id: str, optimizer: str, iterations: int, cpu_s: float | None,
             status: str = "finished") -> None:
    path = root / folder / "w" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"run_id": run_id, "workload": "w", "optimizer": optimizer, "status": status,
            "iterations_done": iterations}
    if cpu_s is not None:
        data["cpu_s"] = cpu_s
    path.write_text(json.dumps(data))
    path.with_suffix(".csv").write_text(",".join(RUN_COLUMNS) + "\n")  # a manifest belongs to a run CSV


def test_compute_table_sums_cpu_per_stage_and_optimizer(tmp_path: Path) -> None:
    manifest(tmp_path, "runs", "a", "sgd", 1000, 80.0)
    manifest(tmp_path, "runs", "b", "sgd", 1000, 100.0)
    manifest(tmp_path, "runs", "c", "mlbfgs", 500, 3600.0, status="running")  # up to its last checkpoint
    manifest(tmp_path, "runs", "old", "adam", 1000, None)  # no cpu_s: left out
    manifest(tmp_path, "tuning/runs", "t", "sgd", 250, 20.0)
    (tmp_path / "runs" / "w" / "stray.json").write_text("{not json")  # no run CSV beside it: not a manifest
    runs = load_compute(load_results(tmp_path))
    assert sorted(runs["run_id"]) == ["a", "b", "c", "t"]
    summary = compute_summary(runs).set_index(["workload", "stage", "optimizer"])
    sgd = summary.loc[("w", "final", "sgd")]
    assert (sgd["runs"], sgd["finished"], sgd["iterations"]) == (2, 2, 2000)
    assert sgd["cpu_ms_per_iteration"] == pytest.approx(90.0)  # 180 s over 2,000 iterations
    assert summary.loc[("w", "final", "mlbfgs"), "finished"] == 0
    assert summary.loc[("w", "final", "all"), "cpu_hours"] == pytest.approx(3780 / 3600)
    assert summary.loc[("all", "all", "all"), "iterations"] == 2750
    assert list(summary.loc[("w", "final")].index) == ["sgd", "mlbfgs", "all"]  # the project's optimizer order
    md = compute_markdown(compute_summary(runs))
    assert "| w | final | sgd | 2 | 2 | 2,000 | 0.05 | 90.0 |" in md
    assert "| w | trial | sgd | 1 | 1 | 250 | 0.01 | 80.0 |" in md


def test_no_manifests_with_cpu_gives_none(tmp_path: Path) -> None:
    assert load_compute(load_results(tmp_path)) is None
    manifest(tmp_path, "runs", "old", "adam", 1000, None)
    manifest(tmp_path, "tuning/runs", "old-trial", "adam", 250, None)
    assert load_compute(load_results(tmp_path)) is None
