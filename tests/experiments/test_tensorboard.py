"""``--tensorboard DIR``: the CSV's numbers as TensorBoard scalars, read back with TensorBoard's own
EventAccumulator; one folder per run (lockstep too), outside the clock, closed on a crash, no
duplicated points after a resume, a clear error without the package."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from experiments import run
from experiments.runner.csvlog import CsvLog
from experiments.runner.spec import make_run_spec

pytest.importorskip("tensorboard", reason="tensorboard is not installed (requirements.txt lists it)")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from tests.support import REPO

ITERS = 20
TINY = ["data.train_subset=1280", "data.test_subset=200", "eval_interval=8", "batch_size=64"]
# the CSV columns each kind of row must show in TensorBoard (written out independently of the code)
EXPECTED = {"train": ("train_loss", "lr", "wall_s", "cpu_s", "grad_evals"), "eval": ("test_loss", "test_acc", "eval_s")}


def _args(root: Path, *optimizers: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["--workload", "fmnist-cnn", "--optimizer", *optimizers, "--seed", "2", "--max-iters", str(ITERS),
            "--out", str(root / "runs"), "--checkpoint-dir", str(root / "ck"), "--no-progress",
            "--threads", str(torch.get_num_threads()), "--tensorboard", str(root / "tb"), *extra, "--set", *TINY]


def _run_id(optimizer: str) -> str:
    spec = make_run_spec("fmnist-cnn", optimizer, 2, overrides=run.parse_overrides(TINY), max_iters=ITERS)
    return spec.run_id


def _csv_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """What TensorBoard should hold: (iteration, value as float32) per column, from the CSV's rows."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, list[tuple[int, float]]] = {}
    for kind, columns in EXPECTED.items():
        for col in columns:
            out[col] = [(int(r["iteration"]), float(np.float32(float(r[col])))) for r in rows
                        if r["kind"] == kind and r[col] != ""]
    return out


def _events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})  # 0: keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


@pytest.mark.parametrize("optimizers", [("sgd",), ("sgd", "adam")], ids=["separate", "lockstep"])
def test_event_files_hold_the_csv_numbers_one_folder_per_run(tmp_path: Path, optimizers: tuple[str, ...]) -> None:
    assert run.main(_args(tmp_path, *optimizers)) == 0
    ids = [_run_id(name) for name in optimizers]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted(ids)
    for run_id in ids:
        expected = _csv_scalars(tmp_path / "runs" / "fmnist-cnn" / f"{run_id}.csv")
        assert [s for s, _ in expected["train_loss"]] == list(range(1, ITERS + 1))
        assert [s for s, _ in expected["test_acc"]] == [0, 8, 16, 20]
        assert _events(tmp_path / "tb" / run_id) == expected


def test_nothing_is_written_to_tensorboard_inside_the_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run.advance reads time.perf_counter when its clock starts and when it stops: every TensorBoard
    write must come while the clock is stopped."""
    from experiments.runner import training as trainer
    from experiments.runner.tensorboard_log import TensorBoardLog

    clock = {"running": False, "writes": 0, "in_clock": 0}

    def perf_counter() -> float:
        clock["running"] = not clock["running"]
        return time.perf_counter()

    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(
        perf_counter=perf_counter, process_time=time.process_time, monotonic=time.monotonic))
    original = TensorBoardLog.write_rows

    def counting(self: TensorBoardLog, rows: Any) -> None:
        clock["writes"] += 1
        clock["in_clock"] += clock["running"]
        original(self, rows)

    monkeypatch.setattr(TensorBoardLog, "write_rows", counting)
    assert run.main(_args(tmp_path, "sgd", extra=("--flush-rows", "1"))) == 0
    assert clock["writes"] >= ITERS and not clock["running"]
    assert clock["in_clock"] == 0


def _next_second() -> None:
    """Event files are read in name order, which starts with their creation second."""
    time.sleep(1.05 - time.time() % 1)


def test_a_crash_closes_the_writer_and_a_resume_adds_no_duplicate_points(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from experiments.runner.training import Run

    original = Run.advance
    crash_at = 14

    def crashing(self: Run) -> None:
        if self.iteration == crash_at:
            raise RuntimeError("crash")
        original(self)

    # rows buffered past the checkpoint at 10 reach the files only when the crash closes the logs
    args = _args(tmp_path, "sgd", extra=("--checkpoint-every", "10", "--flush-rows", "1000"))
    monkeypatch.setattr(Run, "advance", crashing)
    assert run.main(args) == 1  # the run failed: its manifest says so, a rerun resumes it
    monkeypatch.setattr(Run, "advance", original)
    run_id = _run_id("sgd")
    manifest = json.loads((tmp_path / "runs" / "fmnist-cnn" / f"{run_id}.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"] == "RuntimeError: crash"
    before = _events(tmp_path / "tb" / run_id)
    assert [s for s, _ in before["train_loss"]] == list(range(1, crash_at + 1))

    _next_second()
    assert run.main(args) == 0
    expected = _csv_scalars(tmp_path / "runs" / "fmnist-cnn" / f"{run_id}.csv")
    after = _events(tmp_path / "tb" / run_id)
    assert [s for s, _ in after["train_loss"]] == list(range(1, ITERS + 1))
    assert after == expected
    assert after["train_loss"][:10] == before["train_loss"][:10]  # the points up to the checkpoint are kept

    # a forced restart replaces the folder's event files, as it replaces the CSV
    _next_second()
    assert run.main([*args, "--force"]) == 0
    assert len(list((tmp_path / "tb" / run_id).iterdir())) == 1
    assert _events(tmp_path / "tb" / run_id) == _csv_scalars(tmp_path / "runs" / "fmnist-cnn" / f"{run_id}.csv")


def test_without_the_package_the_flag_fails_before_training_naming_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an environment without it looks like
    assert run.main(_args(tmp_path, "sgd")) == 2
    err = capsys.readouterr().err
    assert "tensorboard package" in err and "pip install 'mlbfgs[tensorboard]'" in err
    assert not (tmp_path / "runs").exists()


def test_without_the_flag_tensorboard_is_not_imported(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from experiments import run\n"
        f"args = {_args(tmp_path, 'sgd')!r}\n"
        "i = args.index('--tensorboard'); del args[i:i + 2]\n"
        "assert run.main(args) == 0\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'tensorboard' or 'utils.tensorboard' in m)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=600)
    assert not (tmp_path / "tb").exists()


def test_csv_flush_hands_the_written_rows_on_materialised(tmp_path: Path) -> None:
    seen: list[list[list[Any]]] = []
    log = CsvLog(tmp_path / "a.csv", ("kind", "iteration", "train_loss"), max_rows=2,
                 on_flush=lambda rows: seen.append([list(r) for r in rows]))
    log.write_values(["train", 1, torch.tensor(0.5)])
    assert seen == []  # nothing is handed on between flushes
    log.write_values(["train", 2, torch.tensor(0.25, dtype=torch.float64)])
    assert seen == [[["train", 1, 0.5], ["train", 2, 0.25]]]
    assert all(type(r[2]) is float for r in seen[0])
    log.write({"kind": "eval", "iteration": 2})
    log.close()
    log.close()  # closing again does nothing
    assert seen[1] == [["eval", 2, None]]
    assert (tmp_path / "a.csv").read_text().splitlines()[-1] == "eval,2,"
