"""The suite's progress lines (experiments/suite/progress.py): read from run CSVs and manifests."""

import json
from dataclasses import replace

import pytest

from experiments.runner.csvlog import RUN_COLUMNS
from experiments.runner.spec import make_run_spec
from experiments.suite import cli as suite
from experiments.suite.planning import PlannedRun
from experiments.suite.progress import ProgressReporter, format_duration, group_losses, iterations_done, smoothed_loss
from experiments.suite.stages.analysis import comparison_lines


def write_run(folder, run_id, iterations, total=1000, partial=False, losses=None, optimizer="sgd"):
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{run_id}.json"
    manifest.write_text(json.dumps({"run_id": run_id, "total_iters": total, "status": "running"}))
    rows = [",".join(RUN_COLUMNS)]
    for it in iterations:
        row = dict.fromkeys(RUN_COLUMNS, "")
        row.update(run_id=run_id, kind="train", iteration=str(it),
                   train_loss="" if losses is None else str(losses[len(rows) - 1]))
        rows.append(",".join(row[c] for c in RUN_COLUMNS))
    text = "\n".join(rows) + "\n"
    if partial:
        text += f"{run_id},w,sgd,0,train,1.0,99"  # a row still being written
    (folder / f"{run_id}.csv").write_text(text)
    return PlannedRun(replace(make_run_spec("mnist1d-mlp", optimizer, 0), run_id=run_id), manifest)


def test_iterations_done_reads_the_last_complete_row(tmp_path) -> None:
    run = write_run(tmp_path, "a", [10, 20, 30], partial=True)
    assert iterations_done(run.manifest.with_suffix(".csv")) == 30
    assert iterations_done(tmp_path / "missing.csv") == 0
    header_only = write_run(tmp_path, "b", [])
    assert iterations_done(header_only.manifest.with_suffix(".csv")) == 0


LABEL = "[suite 1/1] lockstep"


def test_reporter_prints_rate_and_time_left_every_interval(tmp_path) -> None:
    now = [0.0]
    lines: list[str] = []
    fast = write_run(tmp_path, "fast", [100])
    slow = write_run(tmp_path, "slow", [100])
    reporter = ProgressReporter(300, clock=lambda: now[0], emit=lines.append)
    reporter.start(LABEL)
    now[0] = 299.0
    reporter.report([(LABEL, [fast, slow])])
    assert lines == []  # the interval has not passed
    now[0] = 300.0
    reporter.report([(LABEL, [fast, slow])])
    assert lines == [f"{LABEL} 100/1000 iterations (10.0 %), measuring the rate"]
    write_run(tmp_path, "fast", [100, 500])
    write_run(tmp_path, "slow", [100, 400])  # a lockstep process reports its slowest run
    now[0] = 400.0
    reporter.report([(LABEL, [fast, slow])])
    assert len(lines) == 1  # the next line comes 300 s after the last
    now[0] = 600.0
    reporter.report([(LABEL, [fast, slow])])
    # 300 iterations in 300 s: 60 it/min, 600 left: 10 min
    assert lines[1] == f"{LABEL} 400/1000 iterations (40.0 %), 60.0 it/min, about 10 min left"


def test_a_run_that_ended_does_not_hold_the_line_back(tmp_path) -> None:
    now = [0.0]
    lines: list[str] = []
    diverged = write_run(tmp_path, "diverged", [3])
    diverged.manifest.write_text(json.dumps({"total_iters": 1000, "status": "finished", "outcome": "diverged"}))
    shorter = write_run(tmp_path, "shorter", [5], total=5)
    shorter.manifest.write_text(json.dumps({"total_iters": 5, "status": "finished"}))
    training = write_run(tmp_path, "training", [200], total=800)
    reporter = ProgressReporter(1, clock=lambda: now[0], emit=lines.append)
    reporter.start(LABEL)
    now[0] = 1.0
    reporter.report([(LABEL, [diverged, shorter, training])])
    assert lines == [f"{LABEL} 200/800 iterations (25.0 %), measuring the rate"]
    training.manifest.write_text(json.dumps({"total_iters": 800, "status": "finished"}))
    now[0] = 2.0
    reporter.report([(LABEL, [diverged, shorter, training])])
    assert lines[1] == f"{LABEL} all 3 run(s) ended"


def test_each_manifest_is_read_once_per_line_and_a_failed_run_has_ended(tmp_path, monkeypatch) -> None:
    from experiments.suite import progress

    failed = write_run(tmp_path, "failed", [7])
    failed.manifest.write_text(json.dumps({"total_iters": 1000, "status": "failed"}))
    runs = [failed, write_run(tmp_path, "a", [40]), write_run(tmp_path, "b", [30], total=2000)]
    reads: list[str] = []
    real = progress.read_json
    monkeypatch.setattr(progress, "read_json", lambda path: reads.append(path.name) or real(path))
    assert progress.group_progress(runs) == (30, 2000)  # the failed run no longer holds the line back
    assert sorted(reads) == ["a.json", "b.json", "failed.json"]


def test_a_csv_cut_back_restarts_the_rate(tmp_path) -> None:
    """Under --force (or a resume) the process empties (cuts back) the CSV it started with."""
    now = [0.0]
    lines: list[str] = []
    run = write_run(tmp_path, "r", [300], total=300)  # the previous invocation's finished run
    reporter = ProgressReporter(10, clock=lambda: now[0], emit=lines.append)
    reporter.start("x")
    now[0] = 10.0
    reporter.report([("x", [run])])
    write_run(tmp_path, "r", [62], total=300)
    now[0] = 20.0
    reporter.report([("x", [run])])
    write_run(tmp_path, "r", [62, 122], total=300)
    now[0] = 30.0
    reporter.report([("x", [run])])
    assert lines[1:] == ["x 62/300 iterations (20.7 %), measuring the rate",
                         "x 122/300 iterations (40.7 %), 360.0 it/min, about 30 s left"]


def test_reporter_before_the_first_logged_iteration(tmp_path) -> None:
    now = [0.0]
    lines: list[str] = []
    run = write_run(tmp_path, "r", [])
    reporter = ProgressReporter(10, clock=lambda: now[0], emit=lines.append)
    reporter.start("[suite 1/1]")
    for t in (10.0, 20.0):
        now[0] = t
        reporter.report([("[suite 1/1]", [run])])
    assert lines == ["[suite 1/1] 0/1000 iterations (0.0 %), measuring the rate",
                     "[suite 1/1] 0/1000 iterations (0.0 %), no new iteration logged"]


def test_unreadable_files_never_stop_the_suite(tmp_path, monkeypatch) -> None:
    from experiments.suite import progress

    run = write_run(tmp_path, "r", [5])
    run.manifest.write_text(json.dumps([1, 2]))  # not an object: no total
    (tmp_path / "r.csv").write_bytes(b"\xff\xfe,iteration\n" + b"r,inf\n")
    assert progress.run_state(run.manifest).total is None and iterations_done(tmp_path / "r.csv") == 0
    for bad in ("NaN", "Infinity", '"abc"', "0", "true"):
        run.manifest.write_text('{"total_iters": ' + bad + '}')
        assert progress.run_state(run.manifest) == progress.RunState(False, None), bad
    lines: list[str] = []
    now = [0.0]
    reporter = ProgressReporter(1, clock=lambda: now[0], emit=lines.append)
    reporter.start("x")
    monkeypatch.setattr(progress, "group_progress", lambda group: 1 / 0)
    now[0] = 1.0
    reporter.report([("x", [run])])
    assert lines == ["x progress unavailable (ZeroDivisionError: division by zero)"]


def test_interval_zero_prints_nothing(tmp_path) -> None:
    now = [0.0]
    lines: list[str] = []
    run = write_run(tmp_path, "r", [5])
    reporter = ProgressReporter(0, clock=lambda: now[0], emit=lines.append)
    reporter.start("x")
    now[0] = 1e6
    reporter.report([("x", [run])])
    assert lines == []
    with pytest.raises(ValueError, match="interval"):
        ProgressReporter(float("nan"))


@pytest.mark.parametrize("seconds, text", [(40.4, "40 s"), (720, "12 min"), (3900, "1 h 05 min")])
def test_format_duration(seconds, text) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_suite_rejects_a_negative_progress_interval(value, capsys) -> None:
    assert suite.main(["--preset", "quick", "--progress-every", value, "--dry-run"]) == 2
    assert "--progress-every must be >= 0" in capsys.readouterr().err


def test_lines_carry_each_optimizers_smoothed_loss(tmp_path) -> None:
    losses = [2.0] * 10 + [1.0] * 20  # the last LOSS_ROWS = 20 rows average to 1.0
    sgd = write_run(tmp_path, "s", list(range(1, 31)), losses=losses, optimizer="sgd")
    ours = write_run(tmp_path, "m", list(range(1, 31)), losses=[0.5] * 29 + [float("nan")], optimizer="mlbfgs")
    assert smoothed_loss(sgd.manifest.with_suffix(".csv")) == pytest.approx(1.0)
    assert group_losses([sgd, ours]) == "sgd 1.000, mlbfgs non-finite"
    lines: list[str] = []
    reporter = ProgressReporter(30, clock=lambda: 30.0, emit=lines.append)
    reporter._last = 0.0
    reporter.report([(LABEL, [sgd, ours])])
    assert lines == [f"{LABEL} 30/1000 iterations (3.0 %), measuring the rate; loss sgd 1.000, mlbfgs non-finite"]


def test_comparison_lines_close_the_job(tmp_path) -> None:
    figures = tmp_path / "figures"
    figures.mkdir()
    (figures / "time_to_target.csv").write_text(
        "workload,optimizer,label,target,seeds,seeds_reached,iterations,iterations_ratio,final,final_low,final_high\n"
        "w,sgd,sgd,0.9,3,3,100,1.0,0.91,0.90,0.92\n"
        "w,mlbfgs,mlbfgs,0.9,3,1,,,0.85,0.80,0.90\n")
    (figures / "convergence_w.png").write_bytes(b"")
    lines = comparison_lines(figures)
    assert lines[0] == "w: target test accuracy 0.9000"
    assert "0.9100 [0.9000, 0.9200]" in lines[2] and "100 (1.00 x sgd)" in lines[2]
    assert lines[3].endswith("not reached (1/3 seeds)")
    assert lines[-1] == f"figure: {figures / 'convergence_w.png'}"
    assert comparison_lines(tmp_path / "none") == []


def test_on_a_terminal_each_process_gets_a_bar(tmp_path, capsys) -> None:
    sgd = write_run(tmp_path, "s", [10, 20], losses=[1.0, 0.5])
    now = [5.0]
    reporter = ProgressReporter(30, clock=lambda: now[0], bars=True)
    reporter.start(LABEL)
    reporter.report([(LABEL, [sgd])])
    bar = reporter._bars[LABEL]
    assert (bar.n, bar.total) == (20, 1000)
    write_run(tmp_path, "s", [10, 20, 30], losses=[1.0, 0.5, 0.5])
    now[0] = 5.5
    reporter.report([(LABEL, [sgd])])
    assert bar.n == 20  # refreshed at most once a second
    now[0] = 6.5
    reporter.report([(LABEL, [sgd])])
    assert bar.n == 30
    reporter.stop(LABEL)
    err = capsys.readouterr().err
    assert "30/1000" in err and "sgd 0.667" in err  # tqdm's own line, with the smoothed loss
