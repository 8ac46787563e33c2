"""Construction and first step of an optimizer by the number of parameter tensors.

    python -m experiments.bench.construction [--tensors 500 1000 2000 4000] [--repeats 5]
                                             [--optimizers sgd adam mlbfgs-model mlbfgs-layer]
                                             [--out results/construction]

Models with thousands of small tensors (many LoRA adapters, per-head parameters) must not make the
optimizer's construction quadratic. Each model alternates matrices (8 x 8) and biases (8,), so
``blocks="layer"`` makes one block per two tensors. In each repeat every (tensor count, optimizer)
pair takes a turn in the same order, so drifts of the machine hit all of them alike: the optimizer is
built (timed), then takes one step (timed; it builds the step's buffers) on fixed gradients. Rows
``optimizer, tensors, repeat, construct_seconds, step_seconds`` go to ``<out>/construction.csv``, the
command and commit to ``<out>/manifest.json``; ``python -m analysis`` tabulates the medians.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from experiments.bench.records import provenance, write_csv
from experiments.bench.schema import CONSTRUCTION_COLUMNS as COLUMNS
from experiments.runner.atomic import write_json
from mlbfgs import MLBFGS

#: the contestants: name -> constructor from a parameter list
OPTIMIZERS: dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
    "mlbfgs-model": lambda ps: MLBFGS(ps, lr=0.1, blocks="model"),
    "mlbfgs-layer": lambda ps: MLBFGS(ps, lr=0.1, blocks="layer"),
}


def make_params(n: int) -> list[torch.nn.Parameter]:
    """``n`` tensors, matrices and biases alternating, each with a fixed gradient."""
    gen = torch.Generator().manual_seed(n)
    params = []
    for i in range(n):
        p = torch.nn.Parameter(torch.randn((8, 8) if i % 2 == 0 else (8,), generator=gen))
        p.grad = torch.randn(p.shape, generator=gen)
        params.append(p)
    return params


def bench(tensors: list[int], optimizers: list[str], repeats: int) -> list[dict]:
    rows = []
    params = {n: make_params(n) for n in tensors}
    for rep in range(-1, repeats):  # repeat -1 warms up (imports, allocator) and is not kept
        for n in tensors:
            for name in optimizers:
                gc.collect()
                t0 = time.perf_counter()
                opt = OPTIMIZERS[name](params[n])
                t1 = time.perf_counter()
                opt.step()
                t2 = time.perf_counter()
                del opt
                if rep >= 0:
                    rows.append({"optimizer": name, "tensors": n, "repeat": rep,
                                 "construct_seconds": t1 - t0, "step_seconds": t2 - t1})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.construction", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tensors", type=int, nargs="+", default=[500, 1000, 2000, 4000])
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--out", type=Path, default=Path("results/construction"))
    args = p.parse_args(argv)
    if any(n < 1 for n in args.tensors) or args.repeats < 1 or args.threads < 1:
        print("error: --tensors, --repeats and --threads must be positive integers", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    rows = bench(args.tensors, args.optimizers, args.repeats)
    for name in args.optimizers:
        for n in args.tensors:
            mine = [r for r in rows if r["optimizer"] == name and r["tensors"] == n]
            build = statistics.median(r["construct_seconds"] for r in mine) * 1e3
            step = statistics.median(r["step_seconds"] for r in mine) * 1e3
            print(f"{name:13s} {n:5d} tensors: construct {build:9.2f} ms, first step {step:9.2f} ms", flush=True)
    write_csv(args.out / "construction.csv", rows, COLUMNS)
    write_json(args.out / "manifest.json", {**provenance("experiments.bench.construction", argv),
                                            "torch_version": torch.__version__, "threads": args.threads})
    return 0


if __name__ == "__main__":
    sys.exit(main())
