"""Per-iteration overhead of each optimizer relative to SGD, and the mL-BFGS direction kernel.

    python -m experiments.bench.overhead [--workloads fmnist-cnn cifar10-resnet18]
                                         [--optimizers sgd adam kfac mlbfgs] [--repeats 15]
                                         [--device auto|cpu|cuda] [--amp bf16|fp16] [--skip-kernel]

Part 1 (optimizers). For each model, one copy per optimizer (same initial weights, one fixed
synthetic batch of the workload's shape), warmed up so that every optimizer is in its steady
state (mL-BFGS: a full ring of pairs; K-FAC: factors and eigenbases computed). Then, repeat after
repeat, the optimizers take turns (interleaved, so drifts of the machine hit all alike); each turn
times one full iteration (forward + backward + step) and, inside it, the forward + backward, so
``step = iteration - forward/backward``; with ``--period N`` a turn is N consecutive iterations and
their mean (work done every few steps, a preconditioner's refresh or a curvature pair, then counts at its
share; the default, 1, times single iterations, whose median leaves such work out). Rows: ``model,
optimizer, measure, repeat, seconds`` in ``results/overhead/optimizers.csv``; analysis reports medians and
ratios to SGD.

Part 2 (kernel). The copy bandwidth of this machine (``dst.copy_(src)``, bytes read + written per
second) and the time of the mL-BFGS direction ``g <- H g`` for a full ring on a flat vector of
``--kernel-numel`` elements, compact form vs two-loop, float32 vs bfloat16 history, interleaved.
The bandwidth bound of a method is the bytes it must move divided by the copy bandwidth; rows go to
``results/overhead/direction_kernel.csv`` with the bound beside each measured time.

Device and precision. ``--device cuda`` (``auto``: CUDA when present) puts models, batches and the kernel's
tensors on the GPU; every timed interval then ends with ``torch.cuda.synchronize`` (CUDA work is
asynchronous), and the copy bandwidth is the GPU memory's. ``--amp bf16|fp16`` runs the forward pass and
the loss under autocast as the runner does (:mod:`experiments.runner.amp`: float16 with loss scaling, the
gradients unscaled before the step); its rows name the model ``<workload> (<amp> autocast)`` and go to
``optimizers_<amp>.csv`` (manifest ``manifest_<amp>.json``) beside the float32 ones, so that one folder
holds both and analysis reports both. ``--skip-kernel`` leaves part 2 out (the kernel does not depend on
autocast).
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
from experiments.bench.records import provenance, write_csv
from experiments.bench.timing import median_time, timed
from experiments.bench.workload import synthetic_batch, workload_model
from experiments.runner.amp import MixedPrecision
from experiments.runner.atomic import write_json
from experiments.runner.manifest import now_iso
from mlbfgs import CurvatureHistory
from mlbfgs.compact import apply_two_loop


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cpu`` / ``cuda`` as named. ValueError for another name
    or ``cuda`` without CUDA."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be one of ['auto', 'cpu', 'cuda'], got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def model_label(workload: str, amp: str | None) -> str:
    """The ``model`` column of the rows: the workload, with the autocast dtype when there is one."""
    return workload if amp is None else f"{workload} ({amp} autocast)"


def bench_optimizers(workload: str, optimizers: list[str], repeats: int, batch: int,
                     device: torch.device | None = None, amp: str | None = None, period: int = 1) -> list[dict]:
    """Part 1: ``repeats`` interleaved turns of every optimizer on ``workload``'s model and one synthetic
    batch of ``batch`` examples, on ``device`` (default CPU), the forward pass under autocast ``amp`` (None:
    float32); each turn the mean of ``period`` consecutive iterations (a period > 1 counts work done every
    few steps, such as a preconditioner's refresh, at its share); rows ``model, optimizer, measure
    (iteration | step), repeat, seconds``."""
    device = device or torch.device("cpu")
    base, shape, classes = workload_model(workload)
    x, y = (t.to(device) for t in synthetic_batch(shape, classes, batch))
    label = model_label(workload, amp)
    runs = {}
    for name in optimizers:
        model = workload_model(workload)[0]
        model.load_state_dict(base.state_dict())
        model.to(device)
        opt = build_optimizer(name, model, lr=0.01)
        opt.amp = MixedPrecision(amp, device, opt.optimizer)  # type: ignore[attr-defined]
        runs[name] = (model, opt)
        warm = 1
        if name in ("mlbfgs", "slbfgs"):
            inner = opt.optimizer
            update_period = inner.config.update_period
            # fill the ring quickly, then measure at the real period
            inner.config = dataclasses.replace(inner.config, update_period=1)
            warm = inner.config.history_size + 2
        # Shampoo: measured past its start_preconditioning_step, in the regime it trains in
        warm = max(warm, getattr(opt.optimizer, "start_preconditioning_step", 0) + 1)
        for _ in range(warm):
            _iteration(model, opt, x, y)
        if name in ("mlbfgs", "slbfgs"):
            inner.config = dataclasses.replace(inner.config, update_period=update_period)
    rows = []
    for rep in range(repeats):
        for name in optimizers:
            model, opt = runs[name]
            spent = [_iteration(model, opt, x, y) for _ in range(period)]
            total = sum(t for t, _ in spent) / period
            fwd_bwd = sum(f for _, f in spent) / period
            rows.append({"model": label, "optimizer": name, "measure": "iteration", "repeat": rep, "seconds": total})
            rows.append(
                {"model": label, "optimizer": name, "measure": "step", "repeat": rep, "seconds": total - fwd_bwd}
            )
    return rows


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _iteration(model: torch.nn.Module, opt, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    spent = [0.0]
    amp = getattr(opt, "amp", None) or MixedPrecision(None, x.device, opt.optimizer)
    params = [p for p in model.parameters() if p.requires_grad]

    def closure(backward: bool = True) -> torch.Tensor:
        _sync(x.device)
        start = time.perf_counter()
        if backward:
            model.zero_grad(set_to_none=False)
            with amp.autocast():
                loss = F.cross_entropy(model(x), y)
            opt.loss_scale = amp.scale
            amp.backward(loss, params)
            loss = loss.detach()
        else:
            with amp.autocast():
                loss = F.cross_entropy(model(x), y)
        _sync(x.device)
        spent[0] += time.perf_counter() - start
        return loss

    _sync(x.device)
    start = time.perf_counter()
    opt.step(closure)
    _sync(x.device)
    return time.perf_counter() - start, spent[0]


def _synced(fn, device: torch.device):
    """``fn`` followed by a device synchronisation (what a timed call of it must wait for)."""
    if device.type != "cuda":
        return fn

    def call() -> None:
        fn()
        torch.cuda.synchronize(device)

    return call


def copy_bandwidth(numel: int, repeats: int, device: torch.device | None = None) -> float:
    """Bytes per second of ``dst.copy_(src)`` on ``device`` (default CPU; each element read once and written
    once)."""
    device = device or torch.device("cpu")
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    seconds = median_time(_synced(lambda: dst.copy_(src), device), repeats, warmup=2)
    return 2 * numel * 4 / seconds


def bench_kernel(numel: int, history: int, repeats: int,
                 device: torch.device | None = None) -> tuple[list[dict], float]:
    """Part 2: the direction of a full ring of ``history`` pairs on ``numel`` elements on ``device`` (default
    CPU), per method (interleaved, ``repeats`` times, the cost of resetting the vector subtracted), beside its
    bandwidth bound; the rows of ``direction_kernel.csv`` and the copy bandwidth in bytes per second."""
    device = device or torch.device("cpu")
    bandwidth = copy_bandwidth(numel * 4, repeats, device)
    gen = torch.Generator().manual_seed(0)
    methods = {}
    for dtype in (torch.float32, torch.bfloat16):
        hist = CurvatureHistory(CurvatureHistory.new_state(numel, history, dtype, device))
        for _ in range(history):
            s = torch.randn(numel, generator=gen).to(device)
            hist.push(s, s * (1.0 + torch.rand(numel, generator=gen).to(device)), phi=1.0)
        methods[f"compact-{str(dtype).split('.')[1]}"] = (hist, "compact")
    hist32 = methods["compact-float32"][0]
    gram, m = hist32.state["gram"], history
    rho = torch.tensor([1.0 / float(gram[i, m + i]) for i in range(m)], device=device)
    alpha, tmp = torch.zeros(m, device=device), torch.zeros((), device=device)
    g = torch.randn(numel, generator=gen).to(device)
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
        copy_seconds.append(timed(_synced(lambda: work.copy_(g), device)))
        for n in names:
            times[n].append(timed(_synced(partial(run, n), device)))
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
    parser.add_argument("--skip-kernel", action="store_true", help="only the optimizers")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where models, batches and the kernel live (auto: CUDA when available)")
    parser.add_argument("--amp", default=None, choices=("bf16", "fp16"),
                        help="forward pass and loss under autocast, as the runner's --amp "
                             "(rows to optimizers_<amp>.csv)")
    parser.add_argument("--period", type=int, default=1,
                        help="iterations per turn, their mean recorded (10: a refresh every 10 steps at its share)")
    parser.add_argument("--out", type=Path, default=Path("results/overhead"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.repeats < 3:
        parser.error("--repeats: at least 3, so that a median means something")
    if args.period < 1:
        parser.error(f"--period: at least 1 (got {args.period})")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        parser.error(f"--device: {err}")
    suffix = "" if args.amp is None else f"_{args.amp}"
    manifest = {
        **provenance("experiments.bench.overhead", argv),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "period": args.period,
        "batch_size": args.batch_size,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "amp": args.amp,
        "started": now_iso(),
    }
    if not args.skip_kernel:
        rows, bandwidth = bench_kernel(args.kernel_numel, args.history_size, args.repeats, device)
        write_csv(args.out / "direction_kernel.csv", rows)
        for method in dict.fromkeys(r["method"] for r in rows):
            sel = [r for r in rows if r["method"] == method]
            med = statistics.median(r["seconds"] for r in sel)
            print(
                f"direction {method:18s} {med * 1e3:8.1f} ms   bandwidth bound {sel[0]['bound_seconds'] * 1e3:8.1f} "
                f"ms   ratio {med / sel[0]['bound_seconds']:.2f}"
            )
        print(f"copy bandwidth {bandwidth / 1e9:.2f} GB/s")
        manifest["copy_bandwidth_gbs"] = bandwidth / 1e9
    if not args.skip_optimizers:
        all_rows = []
        for workload in args.workloads:
            label = model_label(workload, args.amp)
            all_rows += bench_optimizers(workload, args.optimizers, args.repeats, args.batch_size, device, args.amp,
                                         args.period)
            write_csv(args.out / f"optimizers{suffix}.csv", all_rows)
            for measure in ("step", "iteration"):
                sgd = statistics.median(
                    r["seconds"]
                    for r in all_rows
                    if r["model"] == label and r["optimizer"] == "sgd" and r["measure"] == measure
                )
                for name in args.optimizers:
                    med = statistics.median(
                        r["seconds"]
                        for r in all_rows
                        if r["model"] == label and r["optimizer"] == name and r["measure"] == measure
                    )
                    print(f"{label:18s} {measure:9s} {name:8s} {med * 1e3:9.1f} ms  x{med / sgd:6.2f} of sgd")
    manifest["finished"] = now_iso()
    write_json(args.out / f"manifest{suffix}.json", manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
