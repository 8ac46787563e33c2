"""The MLBFGS step eager against ``torch.compile(opt.step)`` (inductor), interleaved.

    python -m experiments.bench.compile [--workloads fmnist-cnn cifar10-resnet18] [--repeats 15]
                                        [--threads 2] [--out results/compile]

For each workload's model (random init), two copies with identical MLBFGS optimizers (the suite's
settings: blocks per layer, M 10, beta 0.999, xi 0.9; T 5 so that pair steps, which run their
pair-forming phase eagerly, are among the timed ones). Both get the same synthetic gradients
(``g = noise + 0.1 theta``) each step. Warm-up fills the ring and compiles every phase; then
the two steps alternate, step by step, for ``repeats`` periods of T steps, and the ratio of the
medians (compiled / eager) is reported with the recompile and graph counts of ``torch._dynamo``
and the largest parameter difference between the two copies (they follow the same trajectory).

Rows: ``workload, variant, step, seconds`` in ``<out>/steps.csv``; ``<out>/summary.csv`` and
``<out>/manifest.json`` (command, commit and dirty flag, torch, threads).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from experiments.bench.records import provenance, write_csv
from experiments.bench.schema import COMPILE_STEP_COLUMNS
from experiments.bench.timing import timed
from experiments.bench.workload import workload_model
from experiments.runner.atomic import write_json
from experiments.runner.manifest import now_iso
from mlbfgs import MLBFGS

SETTINGS = dict(lr=0.1, momentum=0.9, history_size=10, update_period=5, beta=0.999, pair_momentum=0.9,
                blocks="layer")


def bench(workload: str, repeats: int) -> tuple[list[dict], dict]:
    """Steps of ``workload``'s model, eager against compiled, interleaved for ``repeats`` periods of T steps:
    one row per timed step (``workload, variant, step, seconds``) and the workload's summary row."""
    from torch._dynamo.utils import counters

    eager_model, _, _ = workload_model(workload)
    comp_model, _, _ = workload_model(workload)
    ep = [p for p in eager_model.parameters() if p.requires_grad]
    cp = [p for p in comp_model.parameters() if p.requires_grad]
    eager, comp = MLBFGS(ep, **SETTINGS), MLBFGS(cp, **SETTINGS)
    torch._dynamo.reset()
    counters.clear()
    compiled_step = torch.compile(comp.step)
    gen = torch.Generator().manual_seed(0)
    period = SETTINGS["update_period"]

    def set_grads() -> None:
        for a, b in zip(ep, cp):
            g = torch.randn(a.shape, generator=gen) * 1e-2
            a.grad = g + 0.1 * a.detach()
            b.grad = g + 0.1 * b.detach()

    warmup = period * (SETTINGS["history_size"] + 2)
    t0 = time.perf_counter()
    for _ in range(warmup):
        set_grads()
        eager.step()
        compiled_step()
    warm_seconds = time.perf_counter() - t0
    graphs_after_warmup = counters["stats"]["unique_graphs"]
    rows = []
    for r in range(repeats):
        for i in range(period):
            set_grads()
            order = (("eager", eager.step), ("compiled", compiled_step))
            for name, fn in order if (r + i) % 2 == 0 else order[::-1]:
                rows.append({"workload": workload, "variant": name, "step": r * period + i, "seconds": timed(fn)})
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(ep, cp))
    med = {v: statistics.median(x["seconds"] for x in rows if x["variant"] == v) for v in ("eager", "compiled")}
    summary = {
        "workload": workload,
        "parameters": sum(p.numel() for p in ep),
        "eager_ms": round(1e3 * med["eager"], 3),
        "compiled_ms": round(1e3 * med["compiled"], 3),
        "compiled_over_eager": round(med["compiled"] / med["eager"], 3),
        "unique_graphs": counters["stats"]["unique_graphs"],
        "graphs_added_after_warmup": counters["stats"]["unique_graphs"] - graphs_after_warmup,
        "graph_breaks": sum(counters["graph_break"].values()),
        "warmup_seconds_incl_compile": round(warm_seconds, 1),
        "max_param_difference": diff,
        "pairs_accepted": comp.stats["pairs_accepted"],
    }
    return rows, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.bench.compile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workloads", nargs="+", default=["fmnist-cnn", "cifar10-resnet18"])
    p.add_argument("--repeats", type=int, default=15, help="periods of T steps timed per variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/compile"))
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {**provenance("experiments.bench.compile", argv), "torch": torch.__version__, "threads": args.threads,
                "machine": platform.machine(), "settings": SETTINGS, "started": now_iso()}
    all_rows, summaries = [], []
    for workload in args.workloads:
        print(f"[bench.compile] {workload}: warm-up (compiles every phase), then {args.repeats} x "
              f"{SETTINGS['update_period']} interleaved steps", flush=True)
        rows, summary = bench(workload, args.repeats)
        all_rows += rows
        summaries.append(summary)
        print(f"[bench.compile] {summary}", flush=True)
    write_csv(args.out / "steps.csv", all_rows, COMPILE_STEP_COLUMNS)
    write_csv(args.out / "summary.csv", summaries)  # COMPILE_SUMMARY_COLUMNS and more
    manifest["finished"] = now_iso()
    write_json(args.out / "manifest.json", manifest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
