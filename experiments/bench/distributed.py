"""Per-rank curvature memory and direction time of block-sharded mL-BFGS, for several world sizes; and
the three sharding modes compared (DDP whole blocks, DDP rows, FSDP2).

    python -m experiments.bench.distributed [--tables scaling modes] [--workloads fmnist-cnn cifar10-resnet18]
        [--world-sizes 1 2 4] [--repeats N]

``--tables modes``: :mod:`experiments.bench.sharding_modes` (per-rank curvature memory, bytes per step and
step-time ratios of ``ddp-blocks``, ``ddp-rows`` and ``fsdp``; ``results/distributed/sharding_modes.csv``).
``--tables scaling`` (what follows):

For each world size it starts that many gloo processes on this machine (the numbers are about how
the work is divided, which does not need separate machines), builds the model, fills every ring
(update_period=1, history_size+1 steps on random gradients), then reports for each rank:
the blocks it owns, the bytes of curvature state it holds, and the median seconds it spends
computing the directions of its own blocks. It checks, and prints, that
(1) a rank's bytes equal the sum over its blocks of the per-block state size, and
(2) the largest rank holds at most 1/N of the single-process bytes plus the largest block.
Writes ``results/distributed/<workload>.csv`` (schema in DEVELOPERS.md) and a manifest.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from experiments.bench import sharding_modes
from experiments.bench.records import gather_to_rank0, provenance, write_csv
from experiments.bench.timing import median_time
from experiments.bench.workload import workload_model
from experiments.runner.atomic import write_json
from mlbfgs import MLBFGS

HISTORY = 10
TABLES = ("scaling", "modes")
DEFAULT_REPEATS = {"scaling": 20, "modes": 8}


def block_state_bytes(numel: int, history: int, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one block's curvature state, from the definition: P, G, P0, G0 (``numel`` each), the
    2M x n ring, the 2M x 2M Gram (float64) and compact matrices, the 2M row norms and gamma (the last
    three in the working dtype: float32, float64 for a float64 block). Parameters and history in ``dtype``."""
    item = torch.empty((), dtype=dtype).element_size()
    work = 8 if dtype == torch.float64 else 4
    ring = 2 * history * numel * item
    small = (2 * history) ** 2 * (8 + work) + 2 * history * work + work
    return 4 * numel * item + ring + small


def _worker(rank: int, world: int, init_file: str, workload: str, repeats: int, out: str) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // world))
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=600)
    )
    model, _, _ = workload_model(workload)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = MLBFGS(params, lr=0.01, history_size=HISTORY, update_period=1, blocks="layer", process_group=dist.group.WORLD)
    gen = torch.Generator().manual_seed(0)  # same gradients on every rank, as after an all-reduce
    for _ in range(HISTORY + 2):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen) * 1e-2 + 1e-3 * p.detach()
        opt.step()
    owned = opt.owned_blocks
    views = [torch.randn(opt.block_sizes[b], generator=gen) for b in owned]

    def directions() -> None:
        for b, v in zip(owned, views):
            opt.apply_inverse_hessian_(b, v)

    seconds = median_time(directions, repeats) if owned else 0.0
    expected = sum(block_state_bytes(opt.block_sizes[b], HISTORY) for b in owned)
    row = {
        "rank": rank,
        "blocks": len(owned),
        "curvature_bytes": opt.curvature_bytes(),
        "expected_bytes": expected,
        "direction_seconds": seconds,
        "largest_block_bytes": max(block_state_bytes(n, HISTORY) for n in opt.block_sizes),
        "imbalance": opt.imbalance,
    }
    gather_to_rank0(row, out)


def run(workloads: list[str], world_sizes: list[int], repeats: int, out_dir: Path,
        argv: list[str] | None = None) -> bool:
    """Measure every workload at every world size; write ``<out_dir>/<workload>.csv`` and its ``.json``
    manifest (``argv``: the command-line arguments it records, default this process's). True when both
    checks held everywhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ok = True
    for workload in workloads:
        rows = []
        single_bytes = None
        for world in world_sizes:
            with tempfile.TemporaryDirectory() as tmp:
                result = os.path.join(tmp, "rows.json")
                mp.start_processes(
                    _worker,
                    args=(world, os.path.join(tmp, "init"), workload, repeats, result),
                    nprocs=world,
                    join=True,
                    start_method="spawn",
                )
                with open(result) as f:
                    ranks = json.load(f)
            total = sum(r["curvature_bytes"] for r in ranks)
            if world == 1 or single_bytes is None:
                single_bytes = total
            largest = max(r["curvature_bytes"] for r in ranks)
            bound = single_bytes / world + ranks[0]["largest_block_bytes"]
            sums_ok = all(r["curvature_bytes"] == r["expected_bytes"] for r in ranks)
            bound_ok = largest <= bound
            ok &= sums_ok and bound_ok
            print(f"{workload}  world={world}  imbalance={ranks[0]['imbalance']:.3f}")
            for r in ranks:
                print(
                    f"  rank {r['rank']}: {r['blocks']:3d} blocks  {r['curvature_bytes'] / 2**20:9.2f} MiB  "
                    f"direction {r['direction_seconds'] * 1e3:8.3f} ms"
                )
            print(f"  per-rank bytes == sum over own blocks: {'yes' if sums_ok else 'NO'}")
            print(
                f"  max rank {largest / 2**20:.2f} MiB <= single/{world} + largest block "
                f"= {bound / 2**20:.2f} MiB: {'yes' if bound_ok else 'NO'}"
            )
            for r in ranks:
                rows.append(
                    {
                        "model": workload,
                        "world_size": world,
                        "rank": r["rank"],
                        "blocks": r["blocks"],
                        "curvature_bytes": r["curvature_bytes"],
                        "direction_seconds": r["direction_seconds"],
                    }
                )
        path = out_dir / f"{workload}.csv"
        write_csv(path, rows)
        manifest = {
            **provenance("experiments.bench.distributed", argv),
            "torch": torch.__version__,
            "history_size": HISTORY,
            "blocks": "layer",
            "world_sizes": world_sizes,
            "repeats": repeats,
            "cpu_threads": torch.get_num_threads(),
            "checks_passed": ok,
        }
        write_json(path.with_suffix(".json"), manifest)
        print(f"wrote {path}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench.distributed",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES),
                        help="scaling: block sharding's per-rank memory and direction time (<workload>.csv); "
                             "modes: ddp-blocks, ddp-rows and fsdp compared (sharding_modes.csv)")
    parser.add_argument("--workloads", nargs="+", default=["fmnist-cnn", "cifar10-resnet18"])
    parser.add_argument("--world-sizes", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--repeats", type=int, default=None,
                        help=f"timed repeats (default: {DEFAULT_REPEATS['scaling']} for scaling, "
                             f"{DEFAULT_REPEATS['modes']} interleaved rounds for modes)")
    parser.add_argument("--out", type=Path, default=Path("results/distributed"))
    args = parser.parse_args(argv)
    if any(w < 1 for w in args.world_sizes):
        parser.error("--world-sizes: every world size must be >= 1")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats: must be >= 1, got {args.repeats}")
    sizes = sorted(set(args.world_sizes))
    ok = True
    if "scaling" in args.tables:
        ok &= run(args.workloads, sizes, args.repeats or DEFAULT_REPEATS["scaling"], args.out, argv)
    if "modes" in args.tables:
        ok &= sharding_modes.run(args.workloads, sizes, args.repeats or DEFAULT_REPEATS["modes"], args.out, argv)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
