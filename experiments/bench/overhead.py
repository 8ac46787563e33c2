"""Per-iteration overhead of each optimizer relative to SGD, and the mL-BFGS direction kernel.

    python -m experiments.bench.overhead [--workloads fmnist-cnn cifar10-resnet18]
                                         [--optimizers sgd adam kfac mlbfgs] [--repeats 15]

Part 1 (optimizers). For each model, one copy per optimizer (same initial weights, one fixed
synthetic batch of the workload's shape), warmed up so that every optimizer is in its steady
state (mL-BFGS: a full ring of pairs; K-FAC: factors and eigenbases computed). Then, repeat after
repeat, the optimizers take turns (interleaved, so drifts of the machine hit all alike); each turn
times one full iteration (forward + backward + step) and, inside it, the forward + backward, so
``step = iteration - forward/backward``. Rows: ``model, optimizer, measure, repeat, seconds`` in
``results/overhead/optimizers.csv``; analysis reports medians and ratios to SGD.

Part 2 (kernel). The copy bandwidth of this machine (``dst.copy_(src)``, bytes read + written per
second) and the time of the mL-BFGS direction ``g <- H g`` for a full ring on a flat vector of
``--kernel-numel`` elements, compact form vs two-loop, float32 vs bfloat16 history, interleaved.
The bandwidth bound of a method is the bytes it must move divided by the copy bandwidth; rows go to
``results/overhead/direction_kernel.csv`` with the bound beside each measured time.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from baselines import build_optimizer
from experiments.atomic import write_json
from experiments.bench.records import provenance, write_csv
from experiments.bench.timing import median_time, timed
from experiments.bench.workload import synthetic_batch, workload_model
from experiments.manifest import now_iso
from mlbfgs import CurvatureHistory
from mlbfgs.compact import apply_two_loop


def bench_optimizers(workload: str, optimizers: list[str], repeats: int, batch: int) -> list[dict]:
    """Part 1: ``repeats`` interleaved turns of every optimizer on ``workload``'s model and one synthetic
    batch of ``batch`` examples; rows ``model, optimizer, measure (iteration | step), repeat, seconds``."""
    base, shape, classes = workload_model(workload)
    x, y = synthetic_batch(shape, classes, batch)
    runs = {}
    for name in optimizers:
        model = workload_model(workload)[0]
        model.load_state_dict(base.state_dict())
        opt = build_optimizer(name, model, lr=0.01)
        runs[name] = (model, opt)
        warm = 1
        if name in ("mlbfgs", "slbfgs"):
            inner = opt.optimizer
            period = inner.config.update_period
            # fill the ring quickly, then measure at the real period
            inner.config = dataclasses.replace(inner.config, update_period=1)
            warm = inner.config.history_size + 2
        for _ in range(warm):
            _iteration(model, opt, x, y)
        if name in ("mlbfgs", "slbfgs"):
            inner.config = dataclasses.replace(inner.config, update_period=period)
    rows = []
    for rep in range(repeats):
        for name in optimizers:
            model, opt = runs[name]
            total, fwd_bwd = _iteration(model, opt, x, y)
            rows.append({"model": workload, "optimizer": name, "measure": "iteration", "repeat": rep, "seconds": total})
            rows.append(
                {"model": workload, "optimizer": name, "measure": "step", "repeat": rep, "seconds": total - fwd_bwd}
            )
    return rows


def _iteration(model: torch.nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    spent = [0.0]

    def closure(backward: bool = True) -> torch.Tensor:
        start = time.perf_counter()
        if backward:
            model.zero_grad(set_to_none=False)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            loss = loss.detach()
        else:
            loss = F.cross_entropy(model(x), y)
        spent[0] += time.perf_counter() - start
        return loss

    start = time.perf_counter()
    opt.step(closure)
    return time.perf_counter() - start, spent[0]


def copy_bandwidth(numel: int, repeats: int) -> float:
    """Bytes per second of ``dst.copy_(src)`` (each element read once and written once)."""
    src = torch.randn(numel)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), repeats, warmup=2)
    return 2 * numel * 4 / seconds


def bench_kernel(numel: int, history: int, repeats: int) -> tuple[list[dict], float]:
    """Part 2: the direction of a full ring of ``history`` pairs on ``numel`` elements, per method
    (interleaved, ``repeats`` times, the cost of resetting the vector subtracted), beside its bandwidth
    bound; the rows of ``direction_kernel.csv`` and the copy bandwidth in bytes per second."""
    bandwidth = copy_bandwidth(numel * 4, repeats)
    gen = torch.Generator().manual_seed(0)
    methods = {}
    for dtype in (torch.float32, torch.bfloat16):
        hist = CurvatureHistory(CurvatureHistory.new_state(numel, history, dtype, torch.device("cpu")))
        for _ in range(history):
            s = torch.randn(numel, generator=gen)
            hist.push(s, s * (1.0 + torch.rand(numel, generator=gen)), phi=1.0)
        methods[f"compact-{str(dtype).split('.')[1]}"] = (hist, "compact")
    hist32 = methods["compact-float32"][0]
    gram, m = hist32.state["gram"], history
    rho = torch.tensor([1.0 / float(gram[i, m + i]) for i in range(m)])
    alpha, tmp = torch.zeros(m), torch.zeros(())
    g = torch.randn(numel, generator=gen)
    work = g.clone()

    def run(method: str):
        work.copy_(g)  # keep magnitudes steady; its cost is subtracted below
        if method == "two-loop-float32":
            apply_two_loop(hist32.state["history"], hist32.order(), hist32.gamma, work, rho, alpha, tmp)
        else:
            methods[method][0].apply_(work)

    names = ["compact-float32", "two-loop-float32", "compact-bfloat16"]
    item = {"compact-float32": 4, "two-loop-float32": 4, "compact-bfloat16": 2}
    # bytes that must move: the ring read twice (both methods read every pair twice), g read/written
    ring_reads = {"compact-float32": 2, "two-loop-float32": 2, "compact-bfloat16": 2}
    g_passes = {"compact-float32": 3, "two-loop-float32": 3, "compact-bfloat16": 3}
    copy_seconds = []
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(2):
        for n in names:
            run(n)
    for _ in range(repeats):
        copy_seconds.append(timed(lambda: work.copy_(g)))
        for n in names:
            times[n].append(timed(partial(run, n)))
    copy_med = statistics.median(copy_seconds)
    rows = []
    for n in names:
        moved = ring_reads[n] * 2 * history * numel * item[n] + g_passes[n] * numel * 4
        bound = moved / bandwidth
        for rep, t in enumerate(times[n]):
            rows.append(
                {
                    "method": n,
                    "numel": numel,
                    "history_size": history,
                    "repeat": rep,
                    "seconds": t - copy_med,
                    "bytes_moved": moved,
                    "bound_seconds": bound,
                    "bandwidth_gbs": bandwidth / 1e9,
                }
            )
    return rows, bandwidth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.overhead",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", default=["fmnist-cnn", "cifar10-resnet18"])
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam", "kfac", "mlbfgs"])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--kernel-numel", type=int, default=11_173_962, help="ResNet-18 (CIFAR-10) size")
    parser.add_argument("--history-size", type=int, default=10)
    parser.add_argument("--skip-optimizers", action="store_true", help="only the direction kernel")
    parser.add_argument("--out", type=Path, default=Path("results/overhead"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats: at least 3, so that a median means something")
    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = {
        **provenance("experiments.bench.overhead", argv),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "batch_size": args.batch_size,
        "started": now_iso(),
    }
    rows, bandwidth = bench_kernel(args.kernel_numel, args.history_size, args.repeats)
    write_csv(args.out / "direction_kernel.csv", rows)
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        med = statistics.median(r["seconds"] for r in sel)
        print(
            f"direction {method:18s} {med * 1e3:8.1f} ms   bandwidth bound {sel[0]['bound_seconds'] * 1e3:8.1f} ms"
            f"   ratio {med / sel[0]['bound_seconds']:.2f}"
        )
    print(f"copy bandwidth {bandwidth / 1e9:.2f} GB/s")
    manifest["copy_bandwidth_gbs"] = bandwidth / 1e9
    if not args.skip_optimizers:
        all_rows = []
        for workload in args.workloads:
            all_rows += bench_optimizers(workload, args.optimizers, args.repeats, args.batch_size)
            write_csv(args.out / "optimizers.csv", all_rows)
            for measure in ("step", "iteration"):
                sgd = statistics.median(
                    r["seconds"]
                    for r in all_rows
                    if r["model"] == workload and r["optimizer"] == "sgd" and r["measure"] == measure
                )
                for name in args.optimizers:
                    med = statistics.median(
                        r["seconds"]
                        for r in all_rows
                        if r["model"] == workload and r["optimizer"] == name and r["measure"] == measure
                    )
                    print(f"{workload:18s} {measure:9s} {name:8s} {med * 1e3:9.1f} ms  x{med / sgd:6.2f} of sgd")
    manifest["finished"] = now_iso()
    write_json(args.out / "manifest.json", manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
