"""A small synthetic results tree in the DEVELOPERS.md schemas, with numbers a test can check by hand.

Main comparison: 2 workloads x (sgd, adam, kfac, slbfgs, mlbfgs) x seeds 0, 1. Every run trains
``EPOCHS * ITERS_PER_EPOCH`` iterations (train rows at iterations 1..100, epochs numbered from 0) and
is evaluated at iteration 0 and after every epoch (iterations 25, 50, 75, 100). The test accuracy
after epoch e is ``ACC[workload][optimizer][seed][e - 1]``; at iteration 0 it is 0.1.
Training seconds at iteration t: ``seed * STARTUP_S + t * SECONDS_PER_ITER[optimizer]``; gradient
evaluations at iteration t: ``t * GRAD_EVALS_PER_STEP[optimizer]``.
slbfgs diverges: its train loss is NaN from iteration ``DIVERGE_AT`` on.

Beta ablation (workload ``ABLATION_WORKLOAD``): mlbfgs with beta 0.9 and 0.99 (seeds 0, 1) next to
the main mlbfgs runs (beta 0.999) and slbfgs (beta 0). Every slbfgs/mlbfgs run has a curvature CSV
with a pair per block ("block0", "block1") every ``PAIR_PERIOD`` iterations; the fraction of rejected
pairs is ``REJECTED_FRACTION[beta]``.

Overhead: models mlp and resnet18, measures step and iteration, 5 repeats whose median is exactly
``OVERHEAD_MEDIAN_S[model][measure][optimizer]``.
Distributed: model resnet18, world sizes 1, 2, 4 with the per-rank bytes of ``DIST_BYTES``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from experiments.runner.csvlog import CURVATURE_COLUMNS, RUN_COLUMNS

WORKLOADS: tuple[str, ...] = ("mnist1d_mlp", "cifar10_resnet18")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "kfac", "slbfgs", "mlbfgs")
SEEDS: tuple[int, ...] = (0, 1)
EPOCHS = 4
ITERS_PER_EPOCH = 25
STARTUP_S = 0.25
SECONDS_PER_ITER: dict[str, float] = {
    "sgd": 0.010,
    "adam": 0.012,
    "kfac": 0.040,
    "slbfgs": 0.011,
    "mlbfgs": 0.0105,
}
# Synthetic: kfac counts 2 per step so that iterations and gradient evaluations differ somewhere.
GRAD_EVALS_PER_STEP: dict[str, int] = {"sgd": 1, "adam": 1, "kfac": 2, "slbfgs": 1, "mlbfgs": 1}
DIVERGE_AT = 60
MAIN_BETA = 0.999
ABLATION_WORKLOAD = "mnist1d_mlp"
ABLATION_BETAS: tuple[float, ...] = (0.9, 0.99)
PAIR_PERIOD = 5
REJECTED_FRACTION: dict[float, float] = {0.0: 0.25, 0.9: 0.05, 0.99: 0.0, 0.999: 0.0}

# Test accuracy after epochs 1..4, per seed (seed 0, seed 1).
# mnist1d_mlp: target = 0.99 * mean(0.90, 0.90) = 0.891, first reached at
#   sgd 100/100, adam 75/75, kfac 75/never, slbfgs never, mlbfgs 75/50 (iterations).
# cifar10_resnet18: target = 0.99 * mean(0.80, 0.60) = 0.693, first reached at
#   sgd 75/never (seed 1 ends below the mean: the reference does not reach it, ratios are n/a),
#   adam 50/50, kfac 25/50, slbfgs never, mlbfgs 25/50.
ACC: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "mnist1d_mlp": {
        "sgd": ((0.50, 0.70, 0.80, 0.90), (0.52, 0.72, 0.82, 0.90)),
        "adam": ((0.60, 0.80, 0.895, 0.91), (0.61, 0.82, 0.90, 0.92)),
        "kfac": ((0.65, 0.85, 0.90, 0.93), (0.55, 0.75, 0.85, 0.88)),
        "slbfgs": ((0.30, 0.20, 0.10, 0.10), (0.25, 0.15, 0.10, 0.10)),
        "mlbfgs": ((0.60, 0.85, 0.895, 0.92), (0.62, 0.892, 0.91, 0.93)),
    },
    "cifar10_resnet18": {
        "sgd": ((0.40, 0.60, 0.70, 0.80), (0.30, 0.50, 0.60, 0.60)),
        "adam": ((0.50, 0.70, 0.75, 0.78), (0.45, 0.72, 0.74, 0.76)),
        "kfac": ((0.70, 0.75, 0.80, 0.82), (0.60, 0.71, 0.78, 0.80)),
        "slbfgs": ((0.20, 0.10, 0.10, 0.10), (0.15, 0.10, 0.10, 0.10)),
        "mlbfgs": ((0.70, 0.80, 0.85, 0.86), (0.65, 0.75, 0.84, 0.85)),
    },
}
ABLATION_ACC: dict[float, tuple[float, ...]] = {0.9: (0.55, 0.75, 0.85, 0.88), 0.99: (0.58, 0.80, 0.88, 0.90)}

OVERHEAD_MODELS: tuple[str, ...] = ("mlp", "resnet18")
OVERHEAD_MEDIAN_S: dict[str, dict[str, dict[str, float]]] = {
    "mlp": {
        "step": {"sgd": 0.001, "adam": 0.0012, "kfac": 0.008, "slbfgs": 0.0015, "mlbfgs": 0.0013},
        "iteration": {"sgd": 0.010, "adam": 0.0102, "kfac": 0.017, "slbfgs": 0.0105, "mlbfgs": 0.0103},
    },
    "resnet18": {
        "step": {"sgd": 0.01, "adam": 0.012, "kfac": 0.2, "slbfgs": 0.02, "mlbfgs": 0.011},
        "iteration": {"sgd": 0.1, "adam": 0.102, "kfac": 0.29, "slbfgs": 0.11, "mlbfgs": 0.101},
    },
}
OVERHEAD_FACTORS: tuple[float, ...] = (0.9, 1.0, 1.1, 1.5, 0.95)  # median 1.0

DIST_BYTES: dict[int, tuple[int, ...]] = {
    1: (4_000_000,),
    2: (2_100_000, 1_900_000),
    4: (1_100_000, 1_000_000, 950_000, 950_000),
}
DIST_TOTAL_BLOCKS = 8

# the exact columns the runner writes, so the analysis tests read what experiments produce
RUN_HEADER = RUN_COLUMNS
CURVATURE_HEADER = CURVATURE_COLUMNS


def run_id(workload: str, optimizer: str, seed: int, beta: float | None = None) -> str:
    """The run id used by the fixture tree (ablation runs carry their beta)."""
    tag = optimizer if beta is None else f"{optimizer}-b{beta:g}"
    return f"{workload}__{tag}__s{seed}"


def wall_s(optimizer: str, seed: int, iteration: int) -> float:
    """Training seconds at ``iteration`` of a fixture run."""
    return seed * STARTUP_S + iteration * SECONDS_PER_ITER[optimizer]


def _fmt(value: float | int | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


#: Time constant (iterations) of the synthetic train loss decay of the main runs.
LOSS_TAU: dict[str, float] = {"sgd": 45.0, "adam": 35.0, "kfac": 30.0, "slbfgs": 1.0, "mlbfgs": 25.0}


def _train_loss(rng: np.random.Generator, optimizer: str, t: int, tau: float) -> float:
    if optimizer == "slbfgs":
        return float("nan") if t >= DIVERGE_AT else 2.3 * math.exp(t / 40.0)
    return 0.2 + 2.1 * math.exp(-t / tau) + 0.05 * float(rng.standard_normal())


def write_run(
    directory: Path,
    workload: str,
    optimizer: str,
    seed: int,
    acc: tuple[float, ...],
    beta: float | None = None,
    tau: float | None = None,
    seconds_per_iter: float | None = None,
) -> str:
    """Write one run CSV + manifest (+ curvature CSV for slbfgs/mlbfgs) and return its run id."""
    rid = run_id(workload, optimizer, seed, None if beta in (None, MAIN_BETA) else beta)
    rng = np.random.default_rng(seed + 17)

    def clock(t: int) -> float:
        return wall_s(optimizer, seed, t) if seconds_per_iter is None else t * seconds_per_iter

    tau = LOSS_TAU[optimizer] if tau is None else tau
    total = EPOCHS * ITERS_PER_EPOCH
    rows: list[tuple] = []
    ge = GRAD_EVALS_PER_STEP[optimizer]
    rows.append((rid, workload, optimizer, seed, "eval", 0, 0, None, 0.1, 0.0, 0, 2.3, 0.1, 0.05, 0.0))
    for t in range(1, total + 1):
        epoch = (t - 1) // ITERS_PER_EPOCH
        lr = 0.05 * (1 + math.cos(math.pi * (t - 1) / total))
        loss = _train_loss(rng, optimizer, t, tau)
        rows.append(
            (
                rid,
                workload,
                optimizer,
                seed,
                "train",
                epoch,
                t,
                loss,
                lr,
                clock(t),
                t * ge,
                None,
                None,
                None,
                0.9 * clock(t),
            )
        )
        if t % ITERS_PER_EPOCH == 0:
            a = acc[t // ITERS_PER_EPOCH - 1]
            rows.append(
                (
                    rid,
                    workload,
                    optimizer,
                    seed,
                    "eval",
                    epoch,
                    t,
                    None,
                    lr,
                    clock(t),
                    t * ge,
                    2.3 * (1 - a),
                    a,
                    0.05,
                    0.9 * clock(t),
                )
            )
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{rid}.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(RUN_HEADER)
        for row in rows:
            w.writerow([_fmt(v) for v in row])
    opt_config: dict[str, object] = {"lr": 0.1, "weight_decay": 0.0}
    settings: dict[str, object] = {"lr": 0.1}
    if optimizer == "mlbfgs":
        opt_config["beta"] = MAIN_BETA if beta is None else beta
        if beta is not None:
            settings["beta"] = beta
    # The layout experiments/runner/training.py writes: the resolved optimizer config at the top level, the
    # workload config (whose per-optimizer defaults keep beta = 0.999 even for ablation runs) under "config".
    manifest = {
        "run_id": rid,
        "workload": workload,
        "optimizer": optimizer,
        "seed": seed,
        "config": {
            "name": workload,
            "epochs": EPOCHS,
            "batch_size": 32,
            "optimizers": {"sgd": {"lr": 0.1}, "mlbfgs": {"lr": 0.1, "beta": MAIN_BETA}},
        },
        "optimizer_settings": settings,
        "optimizer_config": opt_config,
        "iterations_per_epoch": ITERS_PER_EPOCH,
        "status": "finished",
        "command": f"python -m experiments.run --workload {workload} --optimizer {optimizer} --seed {seed}",
        "git_commit": "0000000",
    }
    (directory / f"{rid}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if optimizer in ("slbfgs", "mlbfgs"):
        b = 0.0 if optimizer == "slbfgs" else (MAIN_BETA if beta is None else beta)
        write_curvature(directory / f"{rid}.curvature.csv", rid, b, seed, last=DIVERGE_AT if b == 0 else total)
    return rid


def curvature_mu(beta: float, k: int) -> float:
    """The k-th mu of a fixture curvature CSV: wide and often negative for beta = 0, tight near 0.5
    for large beta."""
    wiggle = math.sin(1.7 * k + 0.3)
    if beta == 0:
        return 3.0 * wiggle
    spread = 1.0 - beta  # 0.1, 0.01, 0.001
    return 0.5 * math.exp(8.0 * spread * wiggle) + 0.05 * spread * k


def write_curvature(path: Path, rid: str, beta: float, seed: int, last: int) -> None:
    """Curvature CSV: two blocks, a pair every PAIR_PERIOD iterations up to ``last``; row k is
    rejected when ``REJECTED_FRACTION[beta]`` says so (every 4th row for 0.25, every 20th for 0.05)."""
    frac = REJECTED_FRACTION[beta]
    every = round(1 / frac) if frac > 0 else 0
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CURVATURE_HEADER)
        k = 0
        for t in range(PAIR_PERIOD, last + 1, PAIR_PERIOD):
            for block in ("block0", "block1"):
                accepted = not (every and k % every == every - 1)
                w.writerow([rid, t, block, repr(curvature_mu(beta, k + seed)), "True" if accepted else "False"])
                k += 1


def write_overhead(path: Path) -> None:
    """Overhead CSV with 5 repeats per (model, optimizer, measure); medians are OVERHEAD_MEDIAN_S."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("model", "optimizer", "measure", "repeat", "seconds"))
        for model in OVERHEAD_MODELS:
            for optimizer in OPTIMIZERS:
                for measure in ("step", "iteration"):
                    median = OVERHEAD_MEDIAN_S[model][measure][optimizer]
                    for repeat, factor in enumerate(OVERHEAD_FACTORS):
                        w.writerow((model, optimizer, measure, repeat, repr(median * factor)))


def write_distributed(path: Path) -> None:
    """Distributed scaling CSV: per-rank blocks, curvature bytes and direction seconds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(("model", "world_size", "rank", "blocks", "curvature_bytes", "direction_seconds"))
        for n, per_rank in DIST_BYTES.items():
            for rank, nbytes in enumerate(per_rank):
                w.writerow(("resnet18", n, rank, DIST_TOTAL_BLOCKS // n, nbytes, repr(0.02 / n * (1 + 0.05 * rank))))


def make_tree(tmp_path_factory: Any) -> Path:
    """Write the tree into a fresh temporary folder (for module-scoped pytest fixtures)."""
    return write_results_tree(tmp_path_factory.mktemp("results"))


def write_results_tree(root: Path, *, runs: bool = True, overhead: bool = True, distributed: bool = True,
                       fairness: bool = True) -> Path:
    """Write the whole synthetic tree under ``root`` (groups can be left out) and return ``root``."""
    root = Path(root)
    if runs:
        for workload in WORKLOADS:
            directory = root / "runs" / workload
            for optimizer in OPTIMIZERS:
                for seed in SEEDS:
                    write_run(directory, workload, optimizer, seed, ACC[workload][optimizer][seed])
        for beta in ABLATION_BETAS:
            for seed in SEEDS:
                write_run(
                    root / "runs" / ABLATION_WORKLOAD,
                    ABLATION_WORKLOAD,
                    "mlbfgs",
                    seed,
                    ABLATION_ACC[beta],
                    beta=beta,
                    tau=30.0 + 300.0 * (1 - beta),
                )
    if overhead:
        write_overhead(root / "overhead" / "overhead.csv")
    if distributed:
        write_distributed(root / "distributed" / "scaling.csv")
    if fairness:
        # the quick comparison in both modes and conditions: lockstep ratios hold, separate ones drift
        factors = (("lockstep", {"sgd": 2.0, "mlbfgs": 2.0}), ("separate", {"sgd": 3.0, "mlbfgs": 1.2}))
        for mode, loaded_factor in factors:
            for condition in ("idle", "loaded"):
                for optimizer in ("sgd", "mlbfgs"):
                    per_iter = SECONDS_PER_ITER[optimizer] * (loaded_factor[optimizer] if condition == "loaded" else 1)
                    write_run(root / "fairness" / f"{mode}-{condition}" / "runs" / WORKLOADS[0], WORKLOADS[0],
                              optimizer, 0, ACC[WORKLOADS[0]][optimizer][0], seconds_per_iter=per_iter)
    return root
