"""The benchmarks (``experiments/bench/``): shared pieces, command lines, and tiny runs whose files the
analysis reads (the committed results' schemas)."""

from __future__ import annotations

import csv
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from experiments.bench import (
    construction,
    distributed,
    fairness,
    overhead,
    records,
    runner,
    sharding_modes,
    threads,
    timing,
)
from experiments.bench.busy_load import BusyLoad
from experiments.bench.workload import synthetic_batch, workload_model
from experiments.runner.manifest import REPO_ROOT
from mlbfgs import MLBFGS

BENCHMARKS = ("compile", "construction", "distributed", "fairness", "overhead", "peer_implementations", "runner",
              "threads")


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _head() -> str | None:
    """This checkout's commit; None outside a git checkout (then the manifests record None too)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _check_tree(fields: dict) -> None:
    head = _head()
    assert fields["git_commit"] == head
    assert isinstance(fields["git_dirty"], bool) if head else fields["git_dirty"] is None


def _check_provenance(manifest: dict, module: str, argv: list[str]) -> None:
    assert manifest["command"] == " ".join(["python", "-m", module, *argv])
    _check_tree(manifest)


# ---- command lines -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BENCHMARKS)
def test_help_names_the_module(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    module = importlib.import_module(f"experiments.bench.{name}")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    assert f"python -m experiments.bench.{name}" in capsys.readouterr().out


def test_help_runs_as_a_module() -> None:
    out = subprocess.run([sys.executable, "-m", "experiments.bench.threads", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "--load" in out


# ---- shared pieces -------------------------------------------------------------------------------


def test_workload_model_takes_its_shape_from_the_data_registry() -> None:
    model, shape, classes = workload_model("fmnist-cnn")
    assert (shape, classes) == ((1, 28, 28), 10)
    x, y = synthetic_batch(shape, classes, batch=3)
    assert model(x).shape == (3, 10) and y.shape == (3,) and 0 <= int(y.min()) and int(y.max()) < 10
    again, _, _ = workload_model("fmnist-cnn")
    other, _, _ = workload_model("fmnist-cnn", seed=1)
    first = next(model.parameters())
    assert torch.equal(first, next(again.parameters())) and not torch.equal(first, next(other.parameters()))
    with pytest.raises(ValueError, match="workload must be one of"):
        workload_model("no-such-workload")


def test_synthetic_batch_is_seeded() -> None:
    x, y = synthetic_batch((40,), 10, batch=16)
    x2, y2 = synthetic_batch((40,), 10, batch=16)
    assert x.shape == (16, 40) and torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, synthetic_batch((40,), 10, batch=16, seed=1)[0])
    with pytest.raises(ValueError, match="batch must be >= 1, got 0"):
        synthetic_batch((40,), 10, batch=0)


def test_median_time_is_the_median_of_the_timed_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    durations = iter([100.0, 5.0, 1.0, 3.0])  # the first call is the warm-up
    calls = []

    def fn() -> None:
        calls.append(1)
        clock[0] += next(durations)

    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])
    assert timing.median_time(fn, repeats=3, warmup=1) == 3.0
    assert len(calls) == 4
    with pytest.raises(ValueError, match="repeats must be >= 1, got 0"):
        timing.median_time(fn, repeats=0)


def test_busy_load_runs_while_open_and_stops_by_itself() -> None:
    with BusyLoad(1, seconds=60, kind="spin") as load:
        assert len(load.procs) == 1 and load.procs[0].poll() is None
        proc = load.procs[0]
    assert proc.poll() is not None and load.procs == []
    with BusyLoad(1, seconds=0.2) as load:
        assert load.procs[0].wait(timeout=30) == 0  # its own deadline, before the context ends
    for kwargs, message in (({"n": -1}, "n must be >= 0"), ({"seconds": 0}, "seconds must be > 0"),
                            ({"kind": "disk"}, r"kind must be one of \['spin', 'torch'\], got 'disk'")):
        with pytest.raises(ValueError, match=message):
            BusyLoad(**{"n": 1, "seconds": 1.0, **kwargs})


def test_write_csv_header(tmp_path: Path) -> None:
    records.write_csv(tmp_path / "a" / "rows.csv", [{"b": 1, "a": 2}])
    assert (tmp_path / "a" / "rows.csv").read_text().splitlines() == ["b,a", "1,2"]
    records.write_csv(tmp_path / "empty.csv", [], columns=("x", "y"))
    assert (tmp_path / "empty.csv").read_text().splitlines() == ["x,y"]
    with pytest.raises(ValueError, match="no rows, and no columns"):
        records.write_csv(tmp_path / "none.csv", [])


def test_provenance_records_the_command_and_the_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    got = records.provenance("experiments.bench.overhead", ["--out", "a b"])
    assert got["command"] == "python -m experiments.bench.overhead --out 'a b'"
    _check_tree(got)
    monkeypatch.setattr(sys, "argv", ["overhead.py", "--repeats", "3"])
    assert records.provenance("experiments.bench.overhead", None)["command"].endswith(" --repeats 3")


# ---- what each benchmark writes ------------------------------------------------------------------


def test_csv_schemas_are_the_ones_analysis_reads() -> None:
    # stated once (experiments/bench/schema.py): the writers and the readers hold the same objects
    from analysis import compiled as compiled_analysis
    from analysis import load as analysis_load
    from analysis import runner as runner_analysis
    from analysis import threads as threads_analysis
    from experiments.bench import compile as compile_bench
    from experiments.bench import schema

    assert runner_analysis.RUN_COLUMNS is schema.RUNNER_COLUMNS
    assert runner_analysis.STARTUP_COLUMNS is schema.STARTUP_COLUMNS
    assert threads.COLUMNS is threads_analysis.COLUMNS is schema.THREADS_COLUMNS
    assert compile_bench.COMPILE_STEP_COLUMNS is compiled_analysis.STEP_COLUMNS
    assert analysis_load.OVERHEAD_COLUMNS is schema.OVERHEAD_COLUMNS


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_block_state_bytes_is_what_mlbfgs_holds(dtype: torch.dtype) -> None:
    model, shape, classes = workload_model("mnist1d-mlp")
    model.to(dtype)
    params = list(model.parameters())
    opt = MLBFGS(params, lr=0.01, history_size=3, update_period=1, blocks="layer")
    for _ in range(5):
        for p in params:
            p.grad = torch.randn_like(p) * 1e-2 + 1e-3 * p.detach()
        opt.step()
    expected = sum(distributed.block_state_bytes(opt.block_sizes[b], 3, dtype) for b in opt.owned_blocks)
    assert opt.curvature_bytes() == expected


def test_overhead_writes_what_analysis_reads(tmp_path: Path, restore_threads: None) -> None:
    from analysis import load_overhead

    argv = ["--workloads", "mnist1d-mlp", "--optimizers", "sgd", "mlbfgs", "--repeats", "3", "--batch-size", "8",
            "--kernel-numel", "2000", "--history-size", "2", "--threads", "1", "--out", str(tmp_path / "overhead")]
    assert overhead.main(argv) == 0
    frame = load_overhead(tmp_path)
    assert sorted(set(zip(frame["optimizer"], frame["measure"]))) == [
        ("mlbfgs", "iteration"), ("mlbfgs", "step"), ("sgd", "iteration"), ("sgd", "step")]
    assert len(frame) == 4 * 3
    with open(tmp_path / "overhead" / "direction_kernel.csv") as f:
        kernel = list(csv.DictReader(f))
    assert {r["method"] for r in kernel} == {"compact-float32", "two-loop-float32", "compact-bfloat16"}
    assert set(kernel[0]) == {"method", "numel", "history_size", "repeat", "seconds", "bytes_moved",
                              "bound_seconds", "bandwidth_gbs"}
    _check_provenance(json.loads((tmp_path / "overhead" / "manifest.json").read_text()),
                      "experiments.bench.overhead", argv)


def test_overhead_period_records_the_mean_of_consecutive_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    """With --period N a turn's row is the mean of N iterations: a refresh every N steps counts at its share."""
    times = iter([(1.0, 0.5), (3.0, 0.5)] * 4)  # iteration, forward/backward: a slow step every other iteration
    monkeypatch.setattr(overhead, "_iteration", lambda *args: next(times, (1.0, 0.5)))
    rows = overhead.bench_optimizers("mnist1d-mlp", ["sgd"], repeats=3, batch=8, period=2)
    # after the warm-up iteration (consuming one value), each turn pairs a slow and a fast iteration
    assert [r["seconds"] for r in rows if r["measure"] == "iteration"] == [2.0, 2.0, 2.0]
    assert [r["seconds"] for r in rows if r["measure"] == "step"] == [1.5, 1.5, 1.5]
    with pytest.raises(SystemExit):
        overhead.main(["--period", "0", "--skip-kernel"])


def test_construction_writes_what_analysis_reads(tmp_path: Path, restore_threads: None) -> None:
    from analysis.construction import construction_markdown, construction_summary, load_construction, plot_construction

    argv = ["--tensors", "4", "8", "--repeats", "2", "--out", str(tmp_path / "construction")]
    assert construction.main(argv) == 0
    frame = load_construction(tmp_path)
    assert len(frame) == 2 * 2 * len(construction.OPTIMIZERS)
    summary = construction_summary(frame)
    fewest = summary[summary["tensors"] == 4]
    assert (fewest["construct_growth"] == 1.0).all() and (fewest["step_growth"] == 1.0).all()
    assert "torch SGD" in construction_markdown(summary)
    plot_construction(frame, summary)
    _check_provenance(json.loads((tmp_path / "construction" / "manifest.json").read_text()),
                      "experiments.bench.construction", argv)


def test_threads_writes_what_analysis_reads(tmp_path: Path, restore_threads: None) -> None:
    from analysis.threads import load_threads

    argv = ["--workloads", "mnist1d-mlp", "--threads", "1", "--repeats", "2", "--iters", "1", "--batch", "8",
            "--load", "1", "--out", str(tmp_path / "threads")]
    assert threads.main(argv) == 0
    frame = load_threads(tmp_path)
    assert sorted(set(frame["condition"])) == ["idle", "spin", "torch"] and len(frame) == 3 * 2
    manifest = json.loads((tmp_path / "threads" / "manifest.json").read_text())
    _check_provenance(manifest, "experiments.bench.threads", argv)
    assert manifest["recommended_threads"] == 1


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert fairness.main(["--load", "0"]) == 2
    assert "load must be a positive integer, got 0" in capsys.readouterr().err
    assert threads.main(["--iters", "0"]) == 2
    with pytest.raises(ValueError, match=r"optimizer must be one of \['sgd', 'adam', 'mlbfgs'\], got 'kfac'"):
        runner.bare_optimizer("kfac", torch.nn.Linear(2, 2), {})


# ---- sharding modes (python -m experiments.bench.distributed --tables modes) ---------------------


def test_sharding_modes_schema_is_the_one_analysis_reads() -> None:
    from analysis import load as analysis_load
    from analysis import sharding as sharding_analysis

    assert set(sharding_analysis.COLUMNS) <= set(sharding_modes.COLUMNS)
    assert sharding_modes.MODES == sharding_analysis.MODES
    # another table of results/distributed/: the scaling figure must not read it (DEVELOPERS.md)
    shared = set(sharding_modes.COLUMNS) & set(analysis_load.DISTRIBUTED_COLUMNS)
    assert 2 * len(shared) < len(analysis_load.DISTRIBUTED_COLUMNS)


def _rank(times: list[tuple[float, bool]], curvature: int, accounted=(8, 16, 0), formula=(8, 16, 0)) -> dict:
    return {"curvature_bytes": curvature, "times": times, "accounted": accounted, "formula": formula,
            "model_bytes": 100}


def test_sharding_summary_takes_the_slowest_rank_and_keeps_pair_steps_apart() -> None:
    # two ranks, four steps each: the slowest rank's time per step, plain and pair-forming medians apart
    blocks = [{"ddp-blocks": _rank([(1.0, False), (2.0, False), (3.0, False), (9.0, True)], 50,
                                   (0, 0, 40), (0, 0, 40))},
              {"ddp-blocks": _rank([(1.5, False), (1.0, False), (4.0, False), (8.0, True)], 30,
                                   (0, 0, 40), (0, 0, 40))}]
    for rank, times in zip(blocks, ([(0.5, False), (1.0, False), (1.0, False), (3.0, True)],
                                    [(0.5, False), (0.5, False), (2.0, False), (6.0, True)]), strict=True):
        rank["fsdp"] = _rank(times, 20)
    rows, match = sharding_modes.summarise("m", 2, blocks)
    assert match
    by_mode = {r["mode"]: r for r in rows}
    assert [r["mode"] for r in rows] == list(sharding_modes.MODES)
    assert by_mode["ddp-rows"]["status"].startswith("missing") and by_mode["ddp-rows"]["step_seconds"] is None
    ref, fsdp = by_mode["ddp-blocks"], by_mode["fsdp"]
    assert (ref["step_seconds"], ref["pair_step_seconds"], ref["step_ratio"]) == (2.0, 9.0, 1.0)  # max(1,1.5), 2, 4
    assert (fsdp["step_seconds"], fsdp["pair_step_seconds"]) == (1.0, 6.0)
    assert fsdp["step_ratio"] == pytest.approx(0.5) and fsdp["pair_step_ratio"] == pytest.approx(6.0 / 9.0)
    assert (ref["curvature_bytes_max_rank"], ref["curvature_bytes_min_rank"]) == (50, 30)
    assert (fsdp["optimizer_bytes_per_step"], fsdp["optimizer_bytes_pair_step"]) == (8, 24)
    assert (fsdp["timed_steps"], fsdp["timed_pair_steps"]) == (3, 1)
    # the optimizer's accounting disagreeing with the formulas is reported
    blocks[0]["fsdp"]["accounted"] = (12, 16, 0)
    assert sharding_modes.summarise("m", 2, blocks)[1] is False


def test_sharding_modes_writes_what_analysis_reads(tmp_path: Path) -> None:
    from analysis.load import load_distributed
    from analysis.sharding import load_sharding, plot_sharding, sharding_markdown, sharding_summary

    out = tmp_path / "distributed"
    argv = ["--tables", "modes", "--workloads", "mnist1d-mlp", "--world-sizes", "1", "2", "--repeats", "4",
            "--out", str(out)]
    assert distributed.main(argv) == 0
    with open(out / "sharding_modes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(sharding_modes.COLUMNS)
    assert [(r["world_size"], r["mode"]) for r in rows] == [(w, m) for w in ("1", "2") for m in sharding_modes.MODES]
    got = {(int(r["world_size"]), r["mode"]): r for r in rows}
    rows_mode = sharding_modes.rows_mode_available()
    assert (got[(2, "ddp-rows")]["status"] == "measured") == rows_mode
    for (world, _mode), r in got.items():
        if r["status"] != "measured":
            continue
        assert float(r["step_ratio"]) > 0 and int(r["timed_steps"]) + int(r["timed_pair_steps"]) == 4
        if world == 1:  # nothing is exchanged on one rank
            assert int(r["optimizer_bytes_per_step"]) == int(r["model_bytes_per_step"]) == 0
    assert float(got[(2, "ddp-blocks")]["step_ratio"]) == 1.0
    # mnist1d-mlp, blocks per layer: 3 blocks, history 10, float32; P = 40*100 + 100 + 100*100 + 100 + 100*10 + 10
    blocks, m, params = 3, sharding_modes.HISTORY, 15210
    fsdp = got[(2, "fsdp")]
    assert int(fsdp["optimizer_allreduce_bytes"]) == (blocks * (2 * m + 1) + 1) * 4
    assert int(fsdp["optimizer_allreduce_pair_bytes"]) == blocks * (4 * m + 5) * 4
    assert int(fsdp["optimizer_allgather_bytes"]) == 0
    assert int(got[(2, "ddp-blocks")]["model_bytes_per_step"]) == params * 4
    assert int(fsdp["model_bytes_per_step"]) == 3 * params * 4  # every dim 0 (100, 100, 10) is even
    # rows halve the curvature (up to the replicated small matrices); whole blocks cannot (1 block of 3 is 2/3)
    one = int(got[(1, "fsdp")]["curvature_bytes_max_rank"])
    assert int(fsdp["curvature_bytes_max_rank"]) < 0.52 * one
    assert int(got[(2, "ddp-blocks")]["curvature_bytes_max_rank"]) > 0.6 * one
    manifest = json.loads((out / "sharding_modes.json").read_text())
    _check_provenance(manifest, "experiments.bench.distributed", argv)
    assert manifest["bytes_match"] is True and manifest["ddp_rows_available"] == rows_mode

    assert load_distributed(tmp_path) is None  # another table of the folder: the scaling figure ignores it
    frame = load_sharding(tmp_path)
    summary = sharding_summary(frame)
    assert summary.loc[(summary["mode"] == "fsdp") & (summary["world_size"] == 2), "curvature_share"].item() < 0.52
    assert "FSDP2, rows" in sharding_markdown(summary)
    assert len(plot_sharding(frame, summary).axes) == 3


def test_peer_implementations_times_every_candidate_in_turns_and_tabulates_against_sgd(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pytorch_optimizer")
    from experiments.bench import peer_implementations as bench

    # the eager candidates only (heavyball compiles its step: a minute on a CPU)
    monkeypatch.setattr(bench, "CANDIDATES", {"shampoo": {
        "pytorch_optimizer:Shampoo": {"lr": 1e-3, "preconditioning_compute_steps": 2},
        "pytorch_optimizer:ScalableShampoo": {"lr": 1e-3, "preconditioning_compute_steps": 2}}})
    argv = ["--workloads", "mnist1d-mlp", "--repeats", "3", "--period", "2", "--batch-size", "16", "--threads", "1",
            "--out", str(tmp_path)]
    assert bench.main(argv) == 0
    with open(tmp_path / "implementations.csv") as f:
        rows = list(csv.DictReader(f))
    # sgd and both candidates, 3 turns each, in turn order
    assert [r["implementation"] for r in rows[:3]] == ["torch.optim:SGD", "pytorch_optimizer:Shampoo",
                                                        "pytorch_optimizer:ScalableShampoo"]
    assert len(rows) == 9 and all(float(r["iteration_s"]) >= float(r["step_s"]) > 0 for r in rows)
    table = (tmp_path / "implementations.md").read_text()
    assert "| mnist1d-mlp | sgd | `torch.optim:SGD` |" in table and "| 1.0 |" in table
    _check_provenance(json.loads((tmp_path / "implementations.json").read_text()),
                      "experiments.bench.peer_implementations", argv)
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "2"])
