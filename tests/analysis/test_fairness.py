"""Fairness, threads and runner tables: numbers checked against values computed here by hand."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from analysis.fairness import fairness_markdown, fairness_summary, load_fairness
from analysis.load import SchemaError
from analysis.report import generate
from analysis.runner import load_runner, runner_markdown, runner_summary
from analysis.threads import load_threads, threads_markdown, threads_summary
from experiments.runner.csvlog import RUN_COLUMNS

# seconds per iteration of each (mode, condition, optimizer); 40 iterations per run
SPEED = {
    ("lockstep", "idle"): {"sgd": 0.010, "adam": 0.012, "mlbfgs": 0.015},
    ("lockstep", "loaded"): {"sgd": 0.020, "adam": 0.024, "mlbfgs": 0.031},
    ("separate", "idle"): {"sgd": 0.010, "adam": 0.012, "mlbfgs": 0.015},
    ("separate", "loaded"): {"sgd": 0.030, "adam": 0.013, "mlbfgs": 0.040},
}
ITERS = 40


def _write_run(path: Path, optimizer: str, per_iter: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=RUN_COLUMNS)
        w.writeheader()
        base = {"run_id": path.stem, "workload": "w", "optimizer": optimizer, "seed": 0}
        w.writerow({**base, "kind": "eval", "iteration": 0, "wall_s": 0.0, "test_acc": 0.1, "test_loss": 2.3})
        for t in range(1, ITERS + 1):
            w.writerow({**base, "kind": "train", "iteration": t, "epoch": t / 10, "train_loss": 1.0, "lr": 0.1,
                        "wall_s": t * per_iter, "cpu_s": t * per_iter / 2, "grad_evals": t})
        w.writerow({**base, "kind": "eval", "iteration": ITERS, "wall_s": ITERS * per_iter, "test_acc": 0.5,
                    "test_loss": 1.0, "eval_s": 9.0})


def _tree(root: Path) -> Path:
    for (mode, cond), speeds in SPEED.items():
        for optimizer, per_iter in speeds.items():
            _write_run(root / "fairness" / f"{mode}-{cond}" / "runs" / "w" / f"w__{optimizer}__s0.csv", optimizer,
                       per_iter)
    (root / "fairness" / "notes").mkdir()  # not a <mode>-<condition> folder: ignored
    return root


def test_ratios_and_disagreement(tmp_path: Path) -> None:
    runs = load_fairness(_tree(tmp_path))
    assert runs is not None and len(runs) == 12
    row = runs[(runs["mode"] == "separate") & (runs["condition"] == "loaded") & (runs["optimizer"] == "adam")]
    assert row["ratio"].iloc[0] == pytest.approx(0.013 / 0.030)
    assert row["cpu_per_iter"].iloc[0] == pytest.approx(0.013 / 2)
    summary = fairness_summary(runs)
    get = summary.set_index(["mode", "optimizer"])
    assert get.loc[("lockstep", "adam"), "disagreement"] == pytest.approx((0.024 / 0.020) / (0.012 / 0.010) - 1)
    assert get.loc[("lockstep", "mlbfgs"), "disagreement"] == pytest.approx((0.031 / 0.020) / 1.5 - 1)
    assert get.loc[("separate", "mlbfgs"), "disagreement"] == pytest.approx((0.040 / 0.030) / 1.5 - 1)
    assert get.loc[("lockstep", "sgd"), "disagreement"] == pytest.approx(0.0)
    md = fairness_markdown(summary)
    assert "| w | mlbfgs | 1.500 | 1.550 | +3.3 % | 1.500 | 1.333 | -11.1 % |" in md
    assert "lockstep: 2/2 ratios within 10%" in md and "separate: 0/2 ratios within 10%" in md
    assert "lockstep: loaded slowdown of sgd w 2.00x" in md


def test_fairness_folder_absent_or_broken(tmp_path: Path) -> None:
    assert load_fairness(tmp_path) is None
    bad = tmp_path / "fairness" / "lockstep-idle" / "runs" / "w" / "x.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("run_id,workload\n")
    with pytest.raises(SchemaError, match="missing column"):
        load_fairness(tmp_path)


def test_threads_and_runner_tables(tmp_path: Path) -> None:
    (tmp_path / "threads").mkdir()
    rows = ["workload,condition,threads,repeat,seconds,cpu_seconds"]
    for rep, (one, two) in enumerate([(0.010, 0.006), (0.012, 0.008), (0.011, 0.100)]):
        rows += [f"w,idle,1,{rep},{one},{one}", f"w,idle,2,{rep},{two},{two}"]
    (tmp_path / "threads" / "threads.csv").write_text("\n".join(rows) + "\n")
    summary = threads_summary(load_threads(tmp_path))
    two = summary[summary["threads"] == 2].iloc[0]
    assert two["median_s"] == pytest.approx(0.008) and two["ratio_to_1_thread"] == pytest.approx(0.008 / 0.011)
    assert "| w | idle | 2 | 8.00 | 0.73 |" in threads_markdown(summary)

    (tmp_path / "runner").mkdir()
    lines = ["workload,optimizer,contestant,repeat,seconds"]
    for rep in range(3):
        for contestant, sec in (("bare", 0.010), ("runner", 0.0102), ("runner_total", 0.011), ("lockstep", 0.0105)):
            lines.append(f"w,sgd,{contestant},{rep},{sec + rep * 1e-4}")
    (tmp_path / "runner" / "runner.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "runner" / "startup.csv").write_text("workload,stage,repeat,seconds\nw,imports,0,3.5\nw,data,0,1.25\n")
    runs, startup = load_runner(tmp_path)
    summary = runner_summary(runs)
    runner = summary[summary["contestant"] == "runner"].iloc[0]
    assert runner["overhead"] == pytest.approx(0.0103 / 0.0101 - 1)
    md = runner_markdown(summary, startup)
    assert "| w | sgd | 10.100 | 10.300 | 11.100 | 10.600 | 2.0 % | 9.9 % | 5.0 % |" in md
    assert "| w | 3.50 | 1.25 | n/a |" in md


def test_report_writes_the_new_groups(tmp_path: Path) -> None:
    _tree(tmp_path)
    report = generate(tmp_path, tmp_path / "figures", log=lambda line: None)
    names = {p.name for p in report.written}
    assert {"fairness.png", "fairness.md", "fairness.csv"} <= names
    assert "threads" in report.skipped and "runner overhead" in report.skipped
