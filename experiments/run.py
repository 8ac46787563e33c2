"""Train (workload, optimizer, seed) runs; torchrun-aware; resumes from the last checkpoint.

    python -m experiments.run --workload fmnist-cnn --optimizer sgd --seed 0 \
        [--epochs N] [--max-iters N] [--out runs/default] [--set key=value ...] [--amp bf16|fp16|none]
    python -m experiments.run --workload fmnist-cnn --optimizer sgd adam mlbfgs   # lockstep
    python -m experiments.run --workload path/to/my.json --optimizer torch.optim:RAdam --set optimizer.lr=3e-3
    torchrun --nproc_per_node 2 -m experiments.run --workload fmnist-cnn --optimizer mlbfgs
    torchrun --nproc_per_node 2 -m experiments.run --workload fmnist-cnn --optimizer mlbfgs --fsdp

One optimizer: the run trains alone in this process (separate mode). Several: they train in
lockstep in this process (see experiments/runner/lockstep.py), each with its own CSV, manifest and
checkpoint, each iteration timed on the optimizer's own clock. Finished runs are skipped
(``--force`` starts over); interrupted ones resume from their checkpoints.

``--amp bf16|fp16`` is the workload key ``amp`` (``--set amp=bf16``): autocast on the forward pass and loss,
float16 with dynamic loss scaling (experiments/runner/amp.py). It changes the numbers, so it enters the run id.

Under torchrun the model trains with DDP, or with ``--fsdp`` under ``fully_shard`` (FSDP2: parameters,
gradients and optimizer state sharded by rows; mlbfgs keeps its curvature by rows too; optimizers that
cannot train sharded parameters are refused; checkpoints through torch.distributed.checkpoint;
experiments/runner/fsdp.py). Like the number of processes, ``--fsdp`` is not part of the run id: the mathematics
is DDP's, only the float32 rounding differs (the manifest records ``fsdp``; a checkpoint of one kind is
refused by the other).

Exit status: 0 finished (or skipped: already finished; a numerical failure of the optimizer, such as a
matrix that cannot be decomposed, ends a run as diverged), 1 a run failed with an unexpected error (in
lockstep the others go on; its manifest says "failed" and a rerun resumes it), 2 bad arguments (a model or
optimizer constructor refusing its settings among them, found before any data is loaded), missing data, or
a run that another process is training (``<out>/<workload>/<run id>.lock``, experiments/runner/runlock.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from experiments.overrides import parse_overrides
from experiments.runner.amp import AmpError
from experiments.runner.dist_context import DEVICES, setup, teardown
from experiments.runner.drift import config_drift, drift_message
from experiments.runner.fsdp import FSDP_OPTIMIZERS, check_fsdp_run
from experiments.runner.interrupt import sigterm_as_exit
from experiments.runner.lockstep import check_group, train_lockstep
from experiments.runner.manifest import command_line
from experiments.runner.preflight import ConfigurationError, check_construction
from experiments.runner.runlock import RunBusyError, hold_runs
from experiments.runner.spec import RunSpec
from experiments.runner.tensorboard_log import require_tensorboard
from experiments.runner.training import DEFAULT_THREADS, RunOptions, progress_enabled, train
from experiments.workloads.config import AMP_MODES, available_workloads
from experiments.workloads.data.errors import DatasetMissingError


def check_optimizer_settings(name: str, settings: dict) -> None:
    """Fail before any data is loaded when the workload's settings do not fit the optimizer (ValueError
    naming the argument: unknown, invalid for a built-in, or required by an imported class's constructor)."""
    from baselines.registry import check_settings

    try:
        check_settings(name, settings)
    except ValueError as err:
        if name in str(err):
            raise
        raise ValueError(f"optimizer {name!r} with settings {settings}: {err}") from None


def check_workload_names(spec: RunSpec) -> None:
    """Fail before any data is loaded when the workload's model or dataset does not resolve: ValueError
    naming ``model.name`` or ``data.name`` (not registered, or an import path that does not import, lacks
    the attribute, or is not callable)."""
    from experiments.workloads.data import dataset_builder
    from experiments.workloads.models import model_builder

    model_builder(spec.workload.model.name)
    dataset_builder(spec.workload.data.name)


def _catalogue() -> str:
    """What --optimizer and --workload accept, and the models and datasets workloads can name (--help)."""
    from baselines.registry import available_optimizers, describe
    from experiments.workloads.data import available_datasets
    from experiments.workloads.models import available_models

    names = available_optimizers()
    width = max(len(n) for n in names) + 2
    lines = ["optimizers (--optimizer NAME; or module.path:Class, any torch.optim.Optimizer subclass, e.g.",
             "torch.optim:RAdam, built with the model's parameters and --set optimizer.x=... as arguments):"]
    lines += [f"  {n:<{width}}{describe(n)}" for n in names]
    lines += ["", "workloads (--workload NAME; or path/to/workload.json, same schema, runs named by its 'name'):",
              "  " + ", ".join(available_workloads()),
              "", "models (a workload's model.name; or module.path:function, or "
              "experiments.workloads.models.register_model):",
              "  " + ", ".join(available_models()),
              "", "datasets (a workload's data.name; or module.path:function, or "
              "experiments.workloads.data.register_dataset):",
              "  " + ", ".join(available_datasets())]
    return "\n".join(lines)


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments that define one run (the rest say where and how the process runs)."""
    p.add_argument("--workload", metavar="NAME_OR_FILE",
                   help=f"one of {available_workloads()}, or the path of a workload JSON file (same schema; its "
                        "runs are named by its 'name' key)")
    p.add_argument("--optimizer", nargs="+", default=None, metavar="NAME",
                   help="a built-in name (listed below) or module.path:Class, any torch.optim.Optimizer "
                        "subclass (e.g. torch.optim:RAdam); several train in lockstep in this process "
                        "(same data and seed, each optimizer timed on its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="override the workload's epochs")
    p.add_argument("--max-iters", type=int, default=None,
                   help="stop after N iterations (the LR schedule then spans N iterations)")
    p.add_argument("--set", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a workload key: batch_size=64, data.train_subset=5000, optimizer.lr=0.05")
    p.add_argument("--param-groups", default=None, metavar="MODULE:FUNCTION",
                   help="a recipe making the param groups of an optimizer named by import path from the model, e.g. "
                        "baselines.recipes:muon_groups (sets optimizer.param_groups; enters the run id)")
    p.add_argument("--data-dir", default=None, help="dataset directory (sets data.dir)")
    p.add_argument("--amp", choices=(*AMP_MODES, "none"), default=None,
                   help="mixed precision (sets the workload key amp; none: off): autocast on the forward pass and "
                        "loss, float16 with dynamic loss scaling; enters the run id")
    p.add_argument("--checkpoint-every", type=int, default=None, help="iterations between checkpoints")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.run", description=__doc__, epilog=_catalogue(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_arguments(p)
    p.add_argument("--spec", nargs="+", default=None, metavar="FILE", type=Path,
                   help="runs given as JSON files, one run request each ({workload, optimizer, seed, overrides, "
                        "max_iters}: RunSpec.request()); several train in lockstep. What `python -m "
                        "experiments.suite` uses, instead of the run arguments")
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="runs directory (CSV + manifest)")
    p.add_argument("--checkpoint-dir", type=Path, default=None, help="default: <out>/checkpoints")
    p.add_argument("--flush-rows", type=int, default=64,
                   help="write CSV rows to disk every N rows (and at least every 2 s)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch CPU threads per process (default: {DEFAULT_THREADS}, chosen by "
                        "python -m experiments.bench.threads; results/threads/)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--fsdp", action="store_true",
                   help="under torchrun (2+ processes): shard the model with fully_shard (FSDP2) instead of DDP; "
                        f"optimizers {list(FSDP_OPTIMIZERS)} and torch.optim classes (mlbfgs shards its curvature "
                        "by rows); not part of the run id (recorded in the manifest)")
    p.add_argument("--force", action="store_true", help="start over even if finished or checkpointed")
    p.add_argument("--keep-checkpoint", action="store_true", help="keep the last checkpoint when finished")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                   help="also write each run's CSV numbers as TensorBoard event files in DIR/<run id>/ (needs the "
                        "tensorboard package: pip install 'mlbfgs[tensorboard]')")
    return p


def _request(ns: argparse.Namespace, optimizer: str) -> dict:
    """The run request of the run arguments (:meth:`RunSpec.request`)."""
    overrides = parse_overrides(ns.overrides)
    if ns.epochs is not None:
        overrides["epochs"] = ns.epochs
    if ns.data_dir is not None:
        overrides["data.dir"] = ns.data_dir
    if ns.param_groups is not None:
        overrides["optimizer.param_groups"] = ns.param_groups
    if ns.amp is not None:
        overrides["amp"] = None if ns.amp == "none" else ns.amp
    if ns.checkpoint_every is not None:
        overrides["checkpoint_interval"] = ns.checkpoint_every
    return {"workload": ns.workload, "optimizer": optimizer, "seed": ns.seed, "overrides": overrides,
            "max_iters": ns.max_iters}


def _read_request(path: Path) -> dict:
    try:
        request = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"--spec {path}: not a readable JSON run request: {err}") from err
    if not isinstance(request, dict):
        raise ValueError(f"--spec {path}: expected a JSON object (a run request), got {type(request).__name__}")
    return request


def _checked_spec(request: dict) -> RunSpec:
    """The spec of a run request, checked before any data is loaded (ValueError naming the problem)."""
    from baselines.registry import check_optimizer_name

    check_optimizer_name(request.get("optimizer"))
    spec = RunSpec.from_request(request)
    check_workload_names(spec)
    check_optimizer_settings(spec.optimizer, spec.optimizer_settings)
    check_construction(spec)
    return spec


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        if args.spec is not None:
            if args.workload is not None or args.optimizer is not None:
                raise ValueError("give either --spec or --workload/--optimizer, not both")
            requests = [_read_request(path) for path in args.spec]
        else:
            if args.workload is None or not args.optimizer:
                raise ValueError("--workload and --optimizer are required (or --spec)")
            requests = [_request(args, name) for name in args.optimizer]
        specs = [_checked_spec(request) for request in requests]
        for spec in specs if not args.force else []:  # a run recorded under other defaults: see drift.py
            drift = config_drift(spec, spec.manifest_path(args.out))
            if drift:
                raise ValueError(drift_message(spec.run_id, drift))
        if args.flush_rows < 1:
            raise ValueError(f"flush-rows must be a positive integer, got {args.flush_rows}")
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"threads must be a positive integer, got {args.threads}")
        if args.tensorboard is not None:
            require_tensorboard()
        lockstep = len(specs) > 1
        if lockstep:
            check_group(specs)
        if args.fsdp:
            for spec in specs:
                check_fsdp_run(spec)
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world < 2:
                raise ValueError(f"--fsdp shards the model over the processes of torchrun; this process is alone "
                                 f"(WORLD_SIZE={world}): launch it with torchrun --nproc_per_node 2 or more")
    except (ValueError, ModuleNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    threads = args.threads or DEFAULT_THREADS
    torch.set_num_threads(threads)
    ctx = setup(args.device)
    checkpoint_dir = args.checkpoint_dir or args.out / "checkpoints"
    common = ["--out", str(args.out), "--checkpoint-dir", str(checkpoint_dir), "--threads", str(threads),
              "--device", args.device, "--flush-rows", str(args.flush_rows)]
    if args.fsdp:
        common.append("--fsdp")
    if args.tensorboard is not None:
        common += ["--tensorboard", str(args.tensorboard)]
    base = RunOptions(out=args.out, checkpoint_root=checkpoint_dir, threads=threads,
                      progress=progress_enabled() and not args.no_progress, force=args.force,
                      keep_checkpoint=args.keep_checkpoint, flush_rows=args.flush_rows, tensorboard=args.tensorboard,
                      fsdp=args.fsdp,
                      mode="lockstep" if lockstep else "separate",
                      group=tuple(s.run_id for s in specs) if lockstep else (),
                      group_command=command_line(argv) if lockstep else "")
    try:
        # one process trains a run at a time (a second one exits 2 naming the first's pid)
        with hold_runs({s.run_id: s.lock_path(args.out) for s in specs}, ctx):
            if lockstep:
                # each manifest records the command that reproduces its run alone (bit-identical losses)
                commands = {s.run_id: command_line(s.cli_args() + common) for s in specs}
                summaries = train_lockstep(specs, base, ctx, commands)
            else:
                summaries = [train(specs[0], replace(base, command=command_line(argv)), ctx)]
    except (DatasetMissingError, AmpError, ConfigurationError, RunBusyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        teardown(ctx)
    if ctx.is_main:
        for summary in summaries:
            print(json.dumps(summary))
        for summary in summaries:
            if summary.get("status") == "failed":
                print(f"error: run {summary['run_id']} failed: {summary.get('error')} (its manifest says failed; "
                      "a rerun resumes from its last checkpoint)", file=sys.stderr)
    return 1 if any(s.get("status") == "failed" for s in summaries) else 0


if __name__ == "__main__":
    sigterm_as_exit()  # kill <pid> stops it as Ctrl-C does
    sys.exit(main())
