"""What the runner costs: its iteration against a bare PyTorch loop, and the start-up of a run.

    python -m experiments.bench.runner [--workloads mnist1d-mlp fmnist-cnn] [--optimizers sgd mlbfgs]
                                       [--repeats 15] [--iters 50] [--out results/runner]

Per iteration. For each (workload, optimizer), on the workload's real data (the quick preset's
subsets), three contestants train the same model from the same initial weights with the same
optimizer settings:

- ``bare``: a hand-written loop: a seeded permutation per epoch, ``x = transform(X[idx])``,
  ``zero_grad``, forward, cross-entropy, ``backward``, ``step`` of the torch optimizer itself
  (``torch.optim.SGD`` / ``mlbfgs.MLBFGS``), nothing logged;
- ``runner``: :meth:`experiments.runner.training.Run.advance` (batch, LR schedule, the registry's optimizer
  behind its counting closure, curvature records, both clocks), writing to a temporary folder, as its
  own training clock reports it (``wall_s``: what the CSV says an iteration cost);
- ``runner_total``: the same calls timed from outside, which adds the CSV row and the checkpoints it
  writes (every ``checkpoint_interval`` iterations and at epoch ends 30 s apart; evaluations are moved
  past the end);
- ``lockstep``: a second such run timed from outside, plus what the lockstep driver adds per turn
  (swapping the torch RNG streams).

In each repeat the contestants alternate iteration by iteration, ``--iters`` iterations each (the order
rotated), so each repeat's sums cover the same stretch of time and the machine's drifts hit all alike;
rows ``workload, optimizer, contestant, repeat, seconds`` (mean per iteration within the repeat) go to
``<out>/runner.csv``. Overhead = median over repeats of runner / bare in the same repeat, minus 1.

Start-up: the seconds of ``python -c "import experiments.run"`` (a fresh interpreter), of loading
the data (:func:`experiments.runner.training.load_data`), and of building the run (model, optimizer, files,
the evaluation at iteration 0), ``--startup-repeats`` times each; rows
``workload, stage, repeat, seconds`` in ``<out>/startup.csv``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from experiments.bench.records import provenance, write_csv
from experiments.bench.schema import RUNNER_COLUMNS, STARTUP_COLUMNS
from experiments.runner.atomic import write_json
from experiments.runner.dist_context import DistContext
from experiments.runner.lockstep import set_torch_rng_state, torch_rng_state
from experiments.runner.spec import RunSpec, make_run_spec
from experiments.runner.training import Run, RunOptions, load_data
from experiments.suite.presets import load_preset

CONTESTANTS = ("bare", "runner", "runner_total", "lockstep")


def quick_spec(workload: str, optimizer: str, total: int) -> RunSpec:
    """The quick preset's run of ``workload``, ``total`` iterations long, with no evaluation or
    checkpoint before the end."""
    entry = next(e for e in load_preset("quick").runs if e.workload == workload)
    overrides = {**entry.set, "eval_interval": total, "checkpoint_interval": total, "epochs": 10_000}
    return make_run_spec(workload, optimizer, 0, overrides=overrides, max_iters=total)


def bare_optimizer(optimizer: str, model: torch.nn.Module, settings: dict[str, Any]) -> torch.optim.Optimizer:
    """The torch optimizer a hand-written loop would construct with the run's settings."""
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), **settings)
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), **settings)
    if optimizer == "mlbfgs":
        from baselines.registry import build_optimizer

        return build_optimizer("mlbfgs", model, **settings).optimizer  # the MLBFGS itself, with its blocks
    raise ValueError(f"optimizer must be one of ['sgd', 'adam', 'mlbfgs'], got {optimizer!r}")


class BareLoop:
    """The loop a user writes by hand over in-memory tensors."""

    def __init__(self, run: Run) -> None:
        from experiments.workloads.models import build_model

        data, cfg = run.data, run.spec.workload
        self.model = build_model(cfg.model, data.input_shape, data.num_classes)
        self.model.load_state_dict(run.raw_model.state_dict())
        self.model.train()
        settings = {**run.spec.optimizer_settings}
        self.opt = bare_optimizer(run.spec.optimizer, self.model, settings)
        self.x, self.y, self.transform = data.x_train, data.y_train, data.transform
        self.batch_size, self.n = cfg.batch_size, data.num_train
        self.gen = torch.Generator().manual_seed(0)
        self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0

    def iteration(self) -> None:
        if self.pos + self.batch_size > self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        x = self.x[idx]
        if self.transform is not None:
            x = self.transform(x)
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(x), self.y[idx]).backward()
        self.opt.step()


def bench_iterations(workload: str, optimizer: str, repeats: int, iters: int, tmp: Path) -> list[dict]:
    """The contestants of ``(workload, optimizer)`` alternating iteration by iteration, ``iters`` iterations
    per repeat; rows ``workload, optimizer, contestant, repeat, seconds`` (mean per iteration), files in ``tmp``."""
    total = (repeats + 1) * iters * 2 + 10
    spec = quick_spec(workload, optimizer, total)
    ctx = DistContext()
    opts = RunOptions(out=tmp / "runs", checkpoint_root=tmp / "ck", threads=torch.get_num_threads())
    data = load_data(spec, ctx)
    runner = Run(spec, opts, ctx, data)
    runner.start()
    bare = BareLoop(runner)
    # the lockstep contestant: a second run of the same spec in another folder, its RNG swapped per turn
    other = Run(spec, replace(opts, out=tmp / "runs2", checkpoint_root=tmp / "ck2"), ctx, data)
    other.start()
    stream = torch_rng_state(ctx.device)

    def lockstep_turn() -> None:
        nonlocal stream
        set_torch_rng_state(stream, ctx.device)
        other.advance()
        stream = torch_rng_state(ctx.device)

    steps = {"bare": bare.iteration, "runner": runner.advance, "lockstep": lockstep_turn}
    names = list(steps)
    for fn in steps.values():  # warm-up
        for _ in range(iters):
            fn()
    rows = []
    for rep in range(repeats):
        # the contestants alternate iteration by iteration (order rotated), so every repeat's sums are
        # taken over the same stretch of time: the machine's drifts hit all alike
        spent = dict.fromkeys(CONTESTANTS, 0.0)
        for it in range(iters):
            k = (rep + it) % len(names)
            for name in names[k:] + names[:k]:
                clock = runner.wall
                start = time.perf_counter()
                steps[name]()
                seconds = time.perf_counter() - start
                if name == "runner":
                    spent["runner"] += runner.wall - clock
                    spent["runner_total"] += seconds
                else:
                    spent[name] += seconds
        rows += [{"workload": workload, "optimizer": optimizer, "contestant": c, "repeat": rep,
                  "seconds": spent[c] / iters} for c in CONTESTANTS]
    for r in (runner, other):
        r.run_log.close()
    return rows


def bench_startup(workload: str, repeats: int, tmp: Path) -> list[dict]:
    """Seconds of the imports, the data and the run set-up of ``workload``, ``repeats`` times each;
    rows ``workload, stage, repeat, seconds``, files in ``tmp``."""
    rows = []
    for rep in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import experiments.run"], check=True)
        rows.append({"workload": workload, "stage": "imports", "repeat": rep, "seconds": time.perf_counter() - start})
        spec = quick_spec(workload, "sgd", 10)
        start = time.perf_counter()
        data = load_data(spec, DistContext())
        rows.append({"workload": workload, "stage": "data", "repeat": rep, "seconds": time.perf_counter() - start})
        opts = RunOptions(out=tmp / f"s{rep}", checkpoint_root=tmp / f"sck{rep}")
        start = time.perf_counter()
        run = Run(spec, opts, DistContext(), data)
        run.start()
        rows.append({"workload": workload, "stage": "run setup", "repeat": rep,
                     "seconds": time.perf_counter() - start})
        run.run_log.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.runner", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=["mnist1d-mlp", "fmnist-cnn"],
                   choices=["mnist1d-mlp", "fmnist-cnn"])
    p.add_argument("--optimizers", nargs="+", default=["sgd", "mlbfgs"], choices=["sgd", "adam", "mlbfgs"])
    p.add_argument("--repeats", type=int, default=21)
    p.add_argument("--iters", type=int, default=50, help="iterations per timed turn")
    p.add_argument("--startup-repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("results/runner"))
    args = p.parse_args(argv)
    if min(args.repeats, args.iters, args.startup_repeats, args.threads) < 1:
        print("error: repeats, iters, startup-repeats and threads must be positive integers", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    startup: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for workload in args.workloads:
            for optimizer in args.optimizers:
                # fmnist-cnn iterations cost ~100x mnist1d-mlp's: fewer per turn keep the run short
                iters = args.iters if workload == "mnist1d-mlp" else max(1, args.iters // 5)
                folder = Path(tmp) / f"{workload}-{optimizer}"
                got = bench_iterations(workload, optimizer, args.repeats, iters, folder)
                rows += got
                med = {c: statistics.median(r["seconds"] for r in got if r["contestant"] == c) for c in CONTESTANTS}
                bare = {r["repeat"]: r["seconds"] for r in got if r["contestant"] == "bare"}
                over = {c: statistics.median(r["seconds"] / bare[r["repeat"]] for r in got if r["contestant"] == c) - 1
                        for c in CONTESTANTS}
                print(f"{workload:12s} {optimizer:7s} bare {med['bare'] * 1e3:8.3f} ms/iteration; "
                      + "; ".join(f"{c} {med[c] * 1e3:8.3f} ms ({over[c] * 100:+.1f} %)" for c in CONTESTANTS[1:]),
                      flush=True)
            startup += bench_startup(workload, args.startup_repeats, Path(tmp) / f"startup-{workload}")
            for stage in ("imports", "data", "run setup"):
                med = statistics.median(r["seconds"] for r in startup if r["workload"] == workload
                                        and r["stage"] == stage)
                print(f"{workload:12s} start-up {stage:9s} {med:7.3f} s", flush=True)
    write_csv(args.out / "runner.csv", rows, RUNNER_COLUMNS)
    write_csv(args.out / "startup.csv", startup, STARTUP_COLUMNS)
    manifest = {**provenance("experiments.bench.runner", argv), "torch_version": torch.__version__,
                "machine": platform.machine(), "threads": args.threads, "repeats": args.repeats, "iters": args.iters}
    write_json(args.out / "manifest.json", manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
