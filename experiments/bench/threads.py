"""How many torch threads a run should use on this machine, idle and with other work on the cores.

    python -m experiments.bench.threads [--workloads fmnist-cnn mnist1d-mlp] [--threads 1 2]
                                        [--repeats 7] [--iters 20] [--load 2] [--out results/threads]

For each workload: one model and one SGD optimizer on a fixed synthetic batch of the workload's
shape. In each repeat every thread count takes a turn (``torch.set_num_threads``, then ``--iters``
training iterations timed together), so drifts of the machine hit all thread counts alike. This runs
three times: on the machine as it is ("idle"), beside ``--load`` Python processes that each keep one
core busy ("spin"), and beside one other torch job with 2 threads ("torch"); the loads stop by
themselves. Rows ``workload, condition, threads, repeat, seconds, cpu_seconds``
(per iteration; cpu = this process's CPU time, all its threads) go to ``<out>/threads.csv``. The
recommended default is the thread count with the lowest median summed over the loaded conditions and
workloads, ties (within 10%) going to the fewer threads; it is printed and written to ``<out>/manifest.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from experiments.bench.busy_load import BusyLoad
from experiments.bench.records import provenance, write_csv
from experiments.bench.schema import THREADS_COLUMNS as COLUMNS
from experiments.bench.workload import synthetic_batch, workload_model
from experiments.runner.atomic import write_json


def bench(workload: str, threads: list[int], repeats: int, iters: int, batch: int, condition: str) -> list[dict]:
    """Every thread count in turn, ``repeats`` times, ``iters`` SGD iterations each on ``workload``'s model
    and one synthetic batch; rows of :data:`COLUMNS` (seconds per iteration) labelled ``condition``."""
    model, shape, classes = workload_model(workload)
    x, y = synthetic_batch(shape, classes, batch)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def iteration() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for t in threads:  # warm-up at every thread count (thread pools, allocator)
        torch.set_num_threads(t)
        for _ in range(3):
            iteration()
    rows = []
    for rep in range(repeats):
        for t in threads:
            torch.set_num_threads(t)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            for _ in range(iters):
                iteration()
            rows.append({"workload": workload, "condition": condition, "threads": t, "repeat": rep,
                         "seconds": (time.perf_counter() - wall0) / iters,
                         "cpu_seconds": (time.process_time() - cpu0) / iters})
    return rows


def recommend(rows: list[dict], tolerance: float = 0.10) -> int:
    """Fewest threads whose medians summed over loaded conditions and workloads are within ``tolerance``
    of the best sum."""
    loaded = [r for r in rows if r["condition"] != "idle"] or rows
    totals: dict[int, float] = {}
    for t in sorted({r["threads"] for r in loaded}):
        keys = sorted({(r["workload"], r["condition"]) for r in loaded})
        totals[t] = sum(
            statistics.median(r["seconds"] for r in loaded
                              if r["threads"] == t and (r["workload"], r["condition"]) == k)
            for k in keys
        )
    best = min(totals.values())
    return min(t for t, v in totals.items() if v <= best * (1 + tolerance))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.threads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=["fmnist-cnn", "mnist1d-mlp"])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--iters", type=int, default=20, help="iterations per timed turn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--load", type=int, default=2, help="spinning processes in the 'spin' condition")
    p.add_argument("--out", type=Path, default=Path("results/threads"))
    args = p.parse_args(argv)
    if any(t < 1 for t in args.threads) or args.repeats < 1 or args.iters < 1 or args.load < 1:
        print("error: threads, repeats, iters and load must be positive integers", file=sys.stderr)
        return 2
    rows: list[dict] = []
    loads = {"idle": BusyLoad(0, 1800), "spin": BusyLoad(args.load, 1800, "spin"), "torch": BusyLoad(1, 1800, "torch")}
    for condition, load in loads.items():
        with load:
            for workload in args.workloads:
                rows += bench(workload, args.threads, args.repeats, args.iters, args.batch, condition)
                for t in args.threads:
                    med = statistics.median(r["seconds"] for r in rows if r["workload"] == workload
                                            and r["condition"] == condition and r["threads"] == t)
                    print(f"{workload:12s} {condition:6s} threads={t}: {med * 1e3:8.2f} ms/iteration", flush=True)
    choice = recommend(rows)
    write_csv(args.out / "threads.csv", rows, COLUMNS)
    manifest = {**provenance("experiments.bench.threads", argv), "torch_version": torch.__version__,
                "machine": platform.machine(), "cores": len(os.sched_getaffinity(0)), "load_processes": args.load,
                "recommended_threads": choice, "rule": recommend.__doc__}
    write_json(args.out / "manifest.json", manifest)
    print(f"recommended threads per process: {choice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
