"""The paper preset: the authors' settings, torchrun for its multi-GPU workload, the suite's passthrough of
--data-dir / --set / --max-iters, the paper-style figure, and ``bash run_all.sh --paper`` end to end on the
fixture datasets."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.paper import PAPER_WORKLOADS, paper_summary
from baselines import default_config
from experiments.runner.spec import make_run_spec
from experiments.suite import cli as suite
from experiments.suite.cli import with_run_overrides
from experiments.suite.execution import groups, launch_width, run_command
from experiments.suite.planning import plan
from experiments.suite.presets import load_preset
from tests.experiments.test_data import _write_cifar, _write_image_folder
from tests.support import REPO

PAPER_OPTIMIZERS = {"sgd", "adam", "kfac", "slimqn_authors", "mlbfgs_authors", "mlbfgs"}
# the authors' mL-BFGS (shared/spec/mlbfgs.md, run-SLIM.sh): beta, xi, T, M, damping, bounds
MLBFGS = {"beta": 0.999, "pair_momentum": 0.9, "update_period": 50, "history_size": 10, "damping": 0.01,
          "curvature_bounds": (0.01, 1.5), "lr": 0.1, "momentum": 0.9}


def test_paper_preset_has_the_authors_settings() -> None:
    preset = load_preset("paper")
    entries = {e.workload: e for e in preset.runs}
    assert list(entries) == list(PAPER_WORKLOADS)
    expected = {  # workload: (epochs, batch, weight decay, amp, processes)
        "cifar10-resnet18": (150, 128, 2e-4, None, 1),
        "cifar100-resnet18": (150, 128, 2e-4, None, 1),
        "cifar100-deit": (50, 128, 5e-4, None, 1),
        "imagenet-resnet50": (100, 256, 1e-4, "fp16", 4),
    }
    for workload, (epochs, batch, decay, amp, nproc) in expected.items():
        entry = entries[workload]
        assert set(entry.optimizers) == PAPER_OPTIMIZERS and entry.nproc_per_node == nproc
        for name in entry.optimizers:
            spec = make_run_spec(workload, name, 0, overrides=entry.set, epochs=entry.epochs)
            cfg = spec.workload
            assert (cfg.epochs, cfg.batch_size, cfg.amp) == (epochs, batch, amp), (workload, name)
            assert cfg.schedule.kind == "cosine" and cfg.schedule.final_fraction == 1e-3  # lr -> 1e-4 * lr
            resolved = {**default_config(name), **spec.optimizer_settings}
            assert resolved["weight_decay"] == (0.0 if name == "adam" else decay), (workload, name)
            if name in ("mlbfgs", "mlbfgs_authors"):
                got = {k: tuple(v) if isinstance(v, list) else v for k, v in resolved.items() if k in MLBFGS}
                assert got == MLBFGS, (workload, name)
            if name in ("sgd", "kfac"):
                assert resolved["lr"] == 0.1
    assert len(plan(preset)) == 24


def test_multi_gpu_runs_go_through_torchrun_or_one_process() -> None:
    runs = plan(load_preset("paper"))
    imagenet = [r for r in runs if r.workload == "imagenet-resnet50"]
    assert {r.nproc for r in imagenet} == {4} and {r.nproc for r in runs if r not in imagenet} == {1}
    parts = groups(runs, "lockstep")
    assert sorted(len(p) for p in parts) == [1] * 6 + [6] * 3  # a torchrun run trains alone
    from experiments.suite.execution import ExecOptions

    opts = ExecOptions(results=Path("out"))
    cmd = run_command([imagenet[0]], opts, gpus=8)
    assert cmd[1:8] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "-m",
                        "experiments.run"]
    assert cmd[8] == "--spec" and json.loads(Path(cmd[9]).read_text())["workload"] == "imagenet-resnet50"
    assert run_command([imagenet[0]], opts, gpus=2)[5] == "2"
    for gpus in (0, 1):  # no GPUs, or one: the same run in one process
        assert run_command([imagenet[0]], opts, gpus=gpus)[1:3] == ["-m", "experiments.run"]
    cifar = next(p for p in parts if len(p) == 6)
    assert run_command(cifar, opts, gpus=8)[1:4] == ["-m", "experiments.run", "--spec"]
    assert [launch_width(4, g) for g in (0, 1, 2, 3, 4, 8)] == [1, 1, 2, 3, 4, 4]


def test_suite_data_dir_set_and_max_iters_reach_every_run(capsys: pytest.CaptureFixture[str]) -> None:
    preset = load_preset("paper")
    shrunk = with_run_overrides(preset, {"batch_size": 8, "optimizers.mlbfgs.beta": 0.9}, 5, "/data")
    for before, after in zip(preset.runs, shrunk.runs, strict=True):
        assert after.max_iters == 5 and after.set["data.dir"] == "/data" and after.set["batch_size"] == 8
        assert after.set["optimizers.mlbfgs.beta"] == 0.9 != before.set["optimizers.mlbfgs.beta"]  # the CLI wins
    ids = {r.run_id for r in plan(with_run_overrides(preset, {}, None, "/data"))}
    assert ids == {r.run_id for r in plan(preset)}  # where the data lives is not part of a run's identity
    assert with_run_overrides(preset, {}, 5, None).runs[0].max_iters == 5
    with pytest.raises(ValueError, match="max_iters must be a positive integer, got 0"):
        with_run_overrides(preset, {}, 0, None)
    assert suite.main(["--preset", "paper", "--dry-run", "--out", "/tmp/never", "--data-dir", "/data",
                       "--max-iters", "3", "--set", "batch_size=8", "--workloads", "cifar100-deit"]) == 0
    out = capsys.readouterr().out
    assert "data.dir=/data" in out and "--max-iters 3" in out and "batch_size=8" in out
    assert not Path("/tmp/never").exists()  # a dry run writes nothing
    assert "imagenet" not in out


def test_paper_summary_takes_the_last_and_best_evaluation_over_seeds() -> None:
    rows = []
    for seed, accs in ((0, [0.1, 0.6, 0.5]), (1, [0.1, 0.4, 0.7])):
        for i, acc in enumerate(accs):
            rows.append({"run_id": f"r{seed}", "workload": "cifar100-deit", "optimizer": "mlbfgs", "label": "mlbfgs",
                         "kind": "eval", "iteration": 10 * i, "epoch": float(i), "epoch_progress": float(i),
                         "test_acc": acc, "wall_s": 2.0 * i + seed, "train_loss": None})
    summary = paper_summary(pd.DataFrame(rows))
    assert len(summary) == 1
    row = summary.iloc[0]
    assert (row["workload"], row["configuration"], row["seeds"], row["epochs"]) == ("cifar100-deit", "mlbfgs", 2, 2.0)
    assert row["final_test_acc"] == pytest.approx((0.5 + 0.7) / 2)
    assert row["best_test_acc"] == pytest.approx((0.6 + 0.7) / 2)
    assert row["train_seconds"] == pytest.approx((4.0 + 5.0) / 2)


def test_run_all_paper_needs_a_data_dir() -> None:
    proc = subprocess.run(["bash", "run_all.sh", "--paper"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "needs --data-dir DIR" in proc.stderr


def test_run_all_paper_on_fixture_datasets_draws_the_paper_figure(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _write_cifar(data, hundred=False, per_file=4)
    _write_cifar(data, hundred=True, per_file=8)
    _write_image_folder(data, ("n01", "n02"), per_class=4)
    out = tmp_path / "out"
    # every workload and process kind of the preset, shrunk: 2 iterations, small batches, 32-pixel ImageNet,
    # bf16 autocast instead of float16 (float16 convolutions on a CPU take seconds each; the float16 path is
    # tested in tests/test_experiments_amp.py), two of the optimizers, mL-BFGS with 2 pairs (its ring of 10
    # on ResNet-50 would take 2 GB)
    proc = subprocess.run(
        ["bash", "run_all.sh", "--paper", "--data-dir", str(data), "--out", str(out), "--max-iters", "2",
         "--optimizers", "sgd", "mlbfgs", "--threads", "1", "--set", "batch_size=4", "eval_batch_size=8",
         "data.image_size=32", "data.num_workers=0", "amp=bf16", "optimizers.mlbfgs.history_size=2"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (command,) = json.loads((out / "suite_paper.json").read_text())["invocations"]
    assert command["failed_runs"] == 0 and command["stages"]["analysis"]["returncode"] == 0
    figure = out / "figures" / "paper_accuracy.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    manifests = [json.loads(p.read_text()) for p in (out / "runs").glob("*/*.json")]
    assert sorted({m["workload"] for m in manifests}) == sorted(PAPER_WORKLOADS) and len(manifests) == 8
    assert all(m["status"] == "finished" and m["amp"]["dtype"] == "bf16" for m in manifests)
    with open(out / "figures" / "paper_accuracy.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(r["workload"], r["configuration"]) for r in table] == [
        (w, o) for w in PAPER_WORKLOADS for o in ("sgd", "mlbfgs")]
    for row in table:  # the table's final accuracy is the run's last evaluation
        manifest = next(m for m in manifests if m["workload"] == row["workload"] and m["optimizer"] ==
                        row["configuration"])
        assert float(row["final_test_acc"]) == pytest.approx(manifest["final_test_acc"])
        assert float(row["epochs"]) > 0
    assert "paper_accuracy.png" in (out / "figures" / "paper_accuracy.md").read_text()
