"""Train one (workload, optimizer, seed) run; torchrun-aware; resumes from its last checkpoint.

    python -m experiments.run --workload fmnist-cnn --optimizer sgd --seed 0 \
        [--epochs N] [--max-iters N] [--out results/runs] [--set key=value ...]
    torchrun --nproc_per_node 2 -m experiments.run --workload fmnist-cnn --optimizer mlbfgs

Exit status: 0 finished (or skipped: already finished), 2 bad arguments or missing data.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

from experiments.config import available_workloads, parse_overrides
from experiments.data.errors import DatasetMissingError
from experiments.distributed import DEVICES, setup, teardown
from experiments.manifest import command_line
from experiments.runspec import make_run_spec
from experiments.trainer import RunOptions, progress_enabled, train


def check_optimizer_settings(name: str, settings: dict) -> None:
    """Fail before any data is loaded when the workload's settings do not fit the optimizer."""
    from baselines import config_class
    from baselines.config import make_config

    make_config(config_class(name), name, settings)


def default_threads(local_world_size: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", required=True, help=f"one of {available_workloads()}")
    p.add_argument("--optimizer", required=True, help="a name from baselines.available_optimizers()")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the workload's epochs")
    p.add_argument("--max-iters", type=int, default=None,
                   help="stop after N iterations (the LR schedule then spans N iterations)")
    p.add_argument("--out", type=Path, default=Path("results/runs"), help="runs directory (CSV + manifest)")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("results/checkpoints"))
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a workload key: batch_size=64, data.train_subset=5000, optimizer.lr=0.05")
    p.add_argument("--data-dir", default=None, help="dataset directory (sets data.dir)")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints")
    p.add_argument("--flush-rows", type=int, default=64,
                   help="write CSV rows to disk every N rows (and at least every 2 s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores / local ranks)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--force", action="store_true", help="start over even if finished or checkpointed")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the last checkpoint when finished")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        overrides = parse_overrides(args.overrides)
        if args.data_dir is not None:
            overrides["data.dir"] = args.data_dir
        if args.checkpoint_every is not None:
            overrides["checkpoint_interval"] = args.checkpoint_every
        spec = make_run_spec(args.workload, args.optimizer, args.seed, overrides=overrides,
                             epochs=args.epochs, max_iters=args.max_iters)
        from baselines import available_optimizers

        if args.optimizer not in available_optimizers():
            raise ValueError(f"optimizer must be one of {available_optimizers()}, got {args.optimizer!r}")
        check_optimizer_settings(args.optimizer, spec.optimizer_settings)
        if args.flush_rows < 1:
            raise ValueError(f"flush-rows must be a positive integer, got {args.flush_rows}")
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"threads must be a positive integer, got {args.threads}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    threads = args.threads or default_threads(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    ctx = setup(args.device)
    opts = RunOptions(out=args.out, checkpoint_root=args.checkpoint_dir, threads=threads,
                      progress=progress_enabled() and not args.no_progress, force=args.force,
                      keep_checkpoint=args.keep_checkpoint, command=command_line(argv), flush_rows=args.flush_rows)
    try:
        summary = train(spec, opts, ctx)
    except DatasetMissingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        teardown(ctx)
    if ctx.is_main:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
