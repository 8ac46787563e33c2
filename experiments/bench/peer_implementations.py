"""Which library each peer is built on: the step cost of the candidate implementations at the same settings.

    python -m experiments.bench.peer_implementations [--workloads fmnist-cnn mnist1d-mlp] [--repeats 7]
                                                     [--period 10] [--threads 1] [--out results/peers]

SOAP and Shampoo each have two implementations on PyPI whose step costs differ several-fold (issue: head to
head with the optimizers people choose today). Each candidate is built here from its import path with the
same settings (:data:`CANDIDATES`: the preconditioner refreshed every 10 steps, the SOAP authors' betas),
one copy of the workload's model per candidate from the same initial weights, on one fixed synthetic batch.

The refresh is periodic, so a single step says little: each turn times ``--period`` consecutive iterations
of one candidate and keeps their mean (forward + backward + step, and the step alone). Candidates and SGD
take turns (interleaved, so drifts of the machine hit all alike); ``--repeats`` turns each, after a warm-up
of one period. Rows ``workload, peer, implementation, repeat, iteration_s, step_s`` go to
``OUT/implementations.csv``, the medians and their ratios to SGD to ``OUT/implementations.md``, the command
and commit to ``OUT/implementations.json``. The correctness of each candidate against its paper's update is
checked in ``tests/baselines/test_peers.py``; the choice is written in ``baselines/peers/``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path
from typing import Any

import torch

from baselines import build_optimizer
from experiments.bench.overhead import _iteration
from experiments.bench.records import provenance, write_csv
from experiments.bench.workload import synthetic_batch, workload_model
from experiments.runner.atomic import write_json
from experiments.runner.manifest import now_iso

_SOAP = dict(lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, eps=1e-8, weight_decay=0.0, precondition_frequency=10)
_SHAMPOO = dict(lr=1e-3, preconditioning_compute_steps=10)

# peer -> implementation (import path) -> constructor arguments: the registry's settings (baselines/peers/)
# but the lr, which does not change the cost; the same for both libraries
CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "soap": {
        "pytorch_optimizer:SOAP": {**_SOAP, "max_precondition_dim": 10000, "merge_dims": False},
        "heavyball:SOAP": {**_SOAP, "max_precond_dim": 10000, "merge_dims": False, "use_precond_schedule": False},
    },
    "shampoo": {
        "pytorch_optimizer:Shampoo": _SHAMPOO,
        "pytorch_optimizer:ScalableShampoo": {**_SHAMPOO, "start_preconditioning_step": 25},
    },
}


def bench_candidates(workload: str, repeats: int, period: int, batch: int) -> list[dict[str, Any]]:
    """``repeats`` interleaved turns of SGD and every candidate of :data:`CANDIDATES` on ``workload``; each
    turn the mean of ``period`` iterations."""
    base, shape, classes = workload_model(workload)
    x, y = synthetic_batch(shape, classes, batch)
    entries = [("sgd", "torch.optim:SGD", {"lr": 0.01, "momentum": 0.9})]
    entries += [(peer, path, kwargs) for peer, paths in CANDIDATES.items() for path, kwargs in paths.items()]
    runs = []
    for peer, path, kwargs in entries:
        model = workload_model(workload)[0]
        model.load_state_dict(base.state_dict())
        opt = build_optimizer(path, model, **kwargs)
        for _ in range(period):
            _iteration(model, opt, x, y)
        runs.append((peer, path, model, opt))
    rows = []
    for rep in range(repeats):
        for peer, path, model, opt in runs:
            spent = [_iteration(model, opt, x, y) for _ in range(period)]
            iteration = sum(total for total, _ in spent) / period
            step = sum(total - fwd_bwd for total, fwd_bwd in spent) / period
            rows.append({"workload": workload, "peer": peer, "implementation": path, "repeat": rep,
                         "iteration_s": iteration, "step_s": step})
    return rows


def summary(rows: list[dict[str, Any]]) -> str:
    """A markdown table: per workload and implementation, the median step and iteration in ms and as
    multiples of SGD's."""
    lines = ["| workload | peer | implementation | step ms | step ×SGD | iteration ms | iteration ×SGD |",
             "|---|---|---|---:|---:|---:|---:|"]
    for workload in dict.fromkeys(r["workload"] for r in rows):
        sel = [r for r in rows if r["workload"] == workload]

        def median(path: str, key: str, sel: list[dict[str, Any]] = sel) -> float:
            return statistics.median(r[key] for r in sel if r["implementation"] == path)

        sgd = {key: median("torch.optim:SGD", key) for key in ("step_s", "iteration_s")}
        for peer, path in dict.fromkeys((r["peer"], r["implementation"]) for r in sel):
            step, iteration = median(path, "step_s"), median(path, "iteration_s")
            lines.append(f"| {workload} | {peer} | `{path}` | {step * 1e3:.2f} | {step / sgd['step_s']:.1f} | "
                         f"{iteration * 1e3:.1f} | {iteration / sgd['iteration_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.peer_implementations",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--workloads", nargs="+", default=["fmnist-cnn", "mnist1d-mlp"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--period", type=int, default=10, help="iterations per turn (the refresh period)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/peers"))
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error(f"--repeats: at least 3, so that a median means something (got {args.repeats})")
    if args.period < 1:
        parser.error(f"--period: at least 1 (got {args.period})")
    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = {**provenance("experiments.bench.peer_implementations", argv), "torch": torch.__version__,
                "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
                "repeats": args.repeats, "period": args.period, "batch_size": args.batch_size,
                "candidates": CANDIDATES, "started": now_iso()}
    rows: list[dict[str, Any]] = []
    for workload in args.workloads:
        rows += bench_candidates(workload, args.repeats, args.period, args.batch_size)
        write_csv(args.out / "implementations.csv", rows)
    table = summary(rows)
    (args.out / "implementations.md").write_text(
        f"Step cost of the peers' candidate implementations at the same settings (medians of {args.repeats} "
        f"interleaved turns of {args.period} iterations, {manifest['threads']} thread(s), batch {args.batch_size}; "
        f"`{manifest['command']}` at {manifest['git_commit'][:7]}).\n\n{table}")
    write_json(args.out / "implementations.json", {**manifest, "finished": now_iso()})
    print(table, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
