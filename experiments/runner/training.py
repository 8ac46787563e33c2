"""One run as an object that advances one iteration at a time: resumable, logged to CSV, timed on its own.

Order within an iteration t (1-based after the step), inside the run's clock: fetch the batch, set the
LR for step t-1, step. Then, outside the clock: log the train row, evaluate (every ``eval_interval``
and at the end) and checkpoint (every ``checkpoint_interval``, and at an epoch end when 30 s passed
since the last checkpoint); the optional TensorBoard copy of the CSV rows is written when the CSV
flushes, so outside the clock too. The data position is a
function of the iteration, so a checkpoint at iteration t resumes with the batch of iteration t+1.

Mixed precision (a workload's ``amp`` key, :mod:`experiments.runner.amp`): the forward pass, the loss and the
evaluation run under autocast; with float16 the gradients are unscaled inside the closure, and a step
whose gradients overflowed is skipped (counted in the manifest's ``amp.skipped_steps``).

The clock of a run is its own: ``wall_s`` sums the wall seconds of its iterations and ``cpu_s`` the
process CPU seconds spent in them (all threads), so several runs can share one process
(:mod:`experiments.runner.lockstep`) and each still reports only its own time. :func:`train` drives one run
alone (the separate-process mode, and every torchrun run).

Under torchrun the model trains under DDP, or sharded by ``fully_shard`` when :attr:`RunOptions.fsdp` is set
(:mod:`experiments.runner.fsdp`: the optimizer on the sharded parameters, checkpoints through
``torch.distributed.checkpoint``).
"""

from __future__ import annotations

import csv
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from experiments.runner.amp import AmpError, MixedPrecision
from experiments.runner.checkpoint import CheckpointStore, rng_state, set_rng_state
from experiments.runner.csvlog import CsvLog
from experiments.runner.dist_context import DistContext
from experiments.runner.evaluate import evaluate
from experiments.runner.fsdp import EvenTestBatches, load_sharded_state, shard_model, sharded_state
from experiments.runner.manifest import Manifest, device_description, git_state, is_finished, now_iso
from experiments.runner.preflight import build_checked_model, build_checked_optimizer
from experiments.runner.schema import CURVATURE_COLUMNS, RUN_COLUMNS, RunRow
from experiments.runner.spec import RunSpec
from experiments.runner.tensorboard_log import TensorBoardLog
from experiments.workloads.data import build_data
from experiments.workloads.data.base import DataSource
from experiments.workloads.data.sampling import iterations_per_epoch
from experiments.workloads.schedule import LRSchedule

# Torch CPU threads per process unless told otherwise: measured, not assumed, by
# `python -m experiments.bench.threads` (results/threads/), idle and beside other work.
DEFAULT_THREADS = 1
NONFINITE_CHECK_EVERY = 25
# errors that are the optimizer's numerical failure (a factor that cannot be decomposed, a non-finite
# value caught by a check): the run ends as diverged, like a non-finite loss, instead of crashing
NUMERICAL_ERRORS: tuple[type[BaseException], ...] = (torch.linalg.LinAlgError, FloatingPointError)
# an epoch end also checkpoints when this much time passed since the last save (tiny epochs would
# otherwise spend more time saving than training)
EPOCH_CHECKPOINT_SECONDS = 30.0  # iterations between cross-rank divergence checks (distributed runs only)


@dataclass(frozen=True)
class RunOptions:
    out: Path = Path("runs/default")
    checkpoint_root: Path = Path("runs/default/checkpoints")
    threads: int = 1
    progress: bool = False
    force: bool = False  # discard a finished manifest / existing checkpoint and start over
    keep_checkpoint: bool = False  # keep the last checkpoint of a finished run
    command: str = ""  # the command line that reproduces the run alone, for the manifest
    flush_rows: int = 64  # CSV rows buffered before a write (rows are also written every 2 s)
    mode: str = "separate"  # "separate" (one run per process) or "lockstep" (recorded in the manifest)
    group: tuple[str, ...] = ()  # run ids trained in the same lockstep process
    group_command: str = ""  # the command of that lockstep process
    tensorboard: Path | None = None  # a copy of the CSV rows as TensorBoard event files in <tensorboard>/<run id>/
    fsdp: bool = False  # under torchrun: the model under fully_shard (FSDP2) instead of DDP (runner/fsdp.py)


def progress_enabled() -> bool:
    """tqdm bars only on a terminal, never under CI."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _optimizer_settings(spec: RunSpec, ctx: DistContext, sharded: bool = False) -> dict[str, Any]:
    from baselines import config_class

    settings = dict(spec.optimizer_settings)
    # optimizers that distribute their curvature work (mlbfgs blocks, K-FAC inversions) take the group;
    # on sharded (fully_shard) parameters the mesh gives it
    if ctx.enabled and not sharded and "process_group" in getattr(config_class(spec.optimizer), "__dataclass_fields__",
                                                                  {}):
        settings["process_group"] = dist.group.WORLD
    return settings


def _resolved_optimizer_config(spec: RunSpec) -> dict[str, Any]:
    """The registry defaults updated by the run's settings: every hyper-parameter the optimizer used."""
    from baselines import default_config

    return {**default_config(spec.optimizer), **spec.optimizer_settings}


class _CurvatureLog:
    """The curvature CSV, created on the first record (most optimizers never write one)."""

    def __init__(self, path: Path, resume_offset: int | None, resuming: bool, max_rows: int) -> None:
        self.path = path
        self.max_rows = max_rows
        self.log: CsvLog | None = None
        if resuming and resume_offset is not None:  # a file begun before a column was added keeps its header
            with open(path, newline="") as f:
                columns = next(csv.reader(f), CURVATURE_COLUMNS)
            self.log = CsvLog(path, columns, resume_offset=resume_offset, max_rows=max_rows)
        elif path.exists():
            path.unlink()

    def write(self, run_id: str, iteration: int, records: list[dict[str, Any]]) -> None:
        if self.log is None:
            self.log = CsvLog(self.path, CURVATURE_COLUMNS, max_rows=self.max_rows)
        columns = self.log.columns
        for rec in records:
            row = {"run_id": run_id, "iteration": iteration, **rec}
            self.log.write_values([row.get(c) for c in columns])

    def offset(self) -> int | None:
        return None if self.log is None else self.log.offset()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()


class _RecordGather:
    """Distributed runs: each rank sees the pairs of its own blocks only. Records wait on every rank
    and are gathered to rank 0 at checkpoints and at the end (one collective each), in iteration order."""

    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.pending: list[tuple[int, dict[str, Any]]] = []

    def add(self, iteration: int, records: list[dict[str, Any]]) -> None:
        self.pending.extend((iteration, rec) for rec in records)

    def gather(self, sink: _CurvatureLog | None, run_id: str) -> None:
        local = [(it, {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in rec.items()})
                 for it, rec in self.pending]
        self.pending = []
        parts: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(parts, local)
        if sink is None:
            return
        merged = sorted((item for part in parts for item in part), key=lambda item: (item[0], item[1]["block"]))
        for iteration, rec in merged:
            sink.write(run_id, iteration, [rec])


def skip_finished(spec: RunSpec, opts: RunOptions) -> dict[str, Any] | None:
    """The summary of a finished run that is not forced to start over (None: the run must train)."""
    if not opts.force and is_finished(spec.manifest_path(opts.out)):
        return {"run_id": spec.run_id, "status": "skipped (finished)"}
    return None


class Run:
    """The state of one run: model, optimizer, schedule, logs, clocks, checkpoint store.

    Construct it with the global RNGs in the state a fresh process reaches after seeding and loading
    the data (what :func:`train` does); it builds the model and optimizer from them, or restores its
    last checkpoint. Then :meth:`start`, :meth:`advance` until :attr:`done`, :meth:`finish`.
    """

    def __init__(self, spec: RunSpec, opts: RunOptions, ctx: DistContext, data: DataSource) -> None:
        self.spec, self.opts, self.ctx, self.data = spec, opts, ctx, data
        cfg = spec.workload
        self.store = CheckpointStore(spec.checkpoint_dir(opts.checkpoint_root), ctx.rank, ctx.world_size,
                                     sharded=opts.fsdp)
        if opts.force:
            ctx.barrier()
            self.store.clear()
            ctx.barrier()
        self.raw_model = build_checked_model(spec, data.input_shape, data.num_classes).to(ctx.device)
        self.model: nn.Module = self.raw_model
        self.eval_data: DataSource = data
        if opts.fsdp:  # sharded in place: the model's forward pass gathers the weights on every rank
            self.model = self.raw_model = shard_model(self.raw_model, ctx.device)
            self.eval_data = EvenTestBatches(data, ctx.device)  # type: ignore[assignment]
        elif ctx.enabled:
            self.model = nn.parallel.DistributedDataParallel(
                self.raw_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
            )
        self.ipe = iterations_per_epoch(data.num_train, cfg.batch_size, ctx.world_size)
        total = cfg.epochs * self.ipe
        self.total = total if spec.max_iters is None else min(total, spec.max_iters)
        self.eval_interval = cfg.eval_interval or self.ipe
        self.opt = build_checked_optimizer(spec, self.raw_model, _optimizer_settings(spec, ctx, opts.fsdp))
        if opts.fsdp and self.opt.state_dict()["extra"]:
            raise ValueError(f"--fsdp: optimizer {spec.optimizer!r} keeps state outside its torch.optim.Optimizer, "
                             "which the sharded checkpoints do not save")
        if cfg.amp == "fp16" and (self.opt.grad_evals_per_step != 1.0 or getattr(self.opt, "needs_closure", False)):
            raise AmpError(f"{spec.run_id}: amp 'fp16' (loss scaling) needs one gradient evaluation per step; "
                           f"{spec.optimizer} evaluates {self.opt.grad_evals_per_step:g} (or calls its closure "
                           "itself): use amp 'bf16' (no scaling)")
        self.amp = MixedPrecision(cfg.amp, ctx.device, self.opt.optimizer)
        self.schedule = LRSchedule(self.opt.optimizer, cfg.schedule, self.total)

        self.iteration, self.wall, self.cpu = 0, 0.0, 0.0
        self.offsets: dict[str, int | None] = {"run": None, "curvature": None}
        resume_at = self.store.latest_iteration()
        if resume_at is not None and ctx.is_main and not spec.csv_path(opts.out).exists():
            print(f"[{spec.run_id}] checkpoint without its CSV: starting over", file=sys.stderr)
            resume_at = None
        if resume_at is not None:
            payload = self.store.load(resume_at, ctx.device)
            if payload["run_id"] != spec.run_id or payload["total_iters"] != self.total:
                raise ValueError(
                    f"checkpoint in {self.store.dir} belongs to a different run (run id {payload['run_id']}, "
                    f"{payload['total_iters']} iterations); use --force to start over"
                )
            if opts.fsdp:  # the shards through torch.distributed.checkpoint; the counters from this rank's file
                state = sharded_state(self.raw_model, self.opt.optimizer)
                self.store.load_sharded(resume_at, state)
                load_sharded_state(self.raw_model, self.opt.optimizer, state)
                self.opt.grad_evals = int(payload["optimizer"]["grad_evals"])
            else:
                self.raw_model.load_state_dict(payload["model"])
                self.opt.load_state_dict(payload["optimizer"])
            set_rng_state(payload["rng"], ctx.device)
            self.iteration, self.wall, self.offsets = payload["iteration"], payload["wall_s"], payload["offsets"]
            self.cpu = payload.get("cpu_s", 0.0)
            if self.amp.enabled:
                self.amp.load_state_dict(payload["amp"])
        self.resumed_from = resume_at

        self.run_log: CsvLog | None = None
        self.curv_log: _CurvatureLog | None = None
        self.tensorboard: TensorBoardLog | None = None
        self.manifest: Manifest | None = None
        if ctx.is_main:
            self._open_logs(resume_at)
        self.lr = self.schedule.apply(max(self.iteration - 1, 0))
        self.last_eval: dict[str, float] = {}
        # with block sharding each rank sees the pairs of its own blocks; row-sharded (fsdp) every rank sees all
        self.gatherer = _RecordGather(ctx) if ctx.enabled and not opts.fsdp else None
        self.diverged = False
        self.error: str | None = None
        self._batches = None
        self._ident_cells = [spec.run_id, cfg.name, spec.optimizer, spec.seed]
        self._host_loss = ctx.device.type == "cpu"
        self._log_interval = cfg.log_interval
        self._params = list(self.raw_model.parameters())
        self._saved_at = time.monotonic()
        self._sync = ctx.device.type == "cuda"  # CUDA work is asynchronous: wait for it inside the clock

    def _open_logs(self, resume_at: int | None) -> None:
        spec, opts, ctx, cfg = self.spec, self.opts, self.ctx, self.spec.workload
        if opts.tensorboard is not None:
            self.tensorboard = TensorBoardLog(opts.tensorboard / spec.run_id, RUN_COLUMNS, resume_at)
        self.run_log = CsvLog(spec.csv_path(opts.out), RUN_COLUMNS, resume_offset=self.offsets["run"],
                              max_rows=opts.flush_rows,
                              on_flush=None if self.tensorboard is None else self.tensorboard.write_rows)
        self.curv_log = _CurvatureLog(spec.curvature_path(opts.out), self.offsets["curvature"],
                                      resume_at is not None, opts.flush_rows)
        base = {
            "run_id": spec.run_id, "workload": cfg.name, "optimizer": spec.optimizer, "seed": spec.seed,
            "config": cfg.to_dict(), "optimizer_settings": spec.optimizer_settings,
            "optimizer_config": _resolved_optimizer_config(spec),
            "overrides": spec.overrides, "max_iters": spec.max_iters, "total_iters": self.total,
            "iterations_per_epoch": self.ipe, "num_train": self.data.num_train, "num_test": self.data.num_test,
            "parameters": sum(p.numel() for p in self.raw_model.parameters()),
            **git_state(), "torch_version": torch.__version__, "python_version": sys.version.split()[0],
            "device": device_description(ctx.device, opts.threads), "world_size": ctx.world_size, "fsdp": opts.fsdp,
            "threads": opts.threads, "mode": opts.mode, "command": opts.command,
            "csv": spec.csv_path(opts.out).name, "request": spec.request(),
        }
        if self.amp.enabled:
            base["amp"] = self.amp.record()
        if opts.mode == "lockstep":
            base["lockstep"] = {"group": list(opts.group), "command": opts.group_command}
        self.manifest = Manifest(spec.manifest_path(opts.out), base, resume_at)
        self.manifest.update(iterations_done=self.iteration)
        self.manifest.save()

    @property
    def done(self) -> bool:
        return self.iteration >= self.total or self.diverged

    def _batch_stream(self):
        """Batches from the current iteration on, across epochs (the data order is a function of it)."""
        cfg, ctx = self.spec.workload, self.ctx
        position = self.iteration
        while True:
            epoch, start = divmod(position, self.ipe)
            yield from self.data.train_batches(seed=self.spec.seed, epoch=epoch, start=start,
                                               batch_size=cfg.batch_size, rank=ctx.rank, world_size=ctx.world_size)
            position = (epoch + 1) * self.ipe

    def _evaluate(self) -> None:
        with self.amp.autocast():
            loss, acc, secs = evaluate(self.raw_model, self.eval_data, self.spec.workload.eval_batch_size, self.ctx)
        self.last_eval.update(test_loss=loss, test_acc=acc)
        if self.run_log is not None:
            self.run_log.write_values(RunRow(
                *self._ident_cells, "eval", round(self.iteration / self.ipe, 6), self.iteration, lr=self.lr,
                wall_s=round(self.wall, 6), cpu_s=round(self.cpu, 6), grad_evals=self.opt.grad_evals,
                test_loss=loss, test_acc=acc, eval_s=round(secs, 6)))

    def _checkpoint(self) -> None:
        if self.gatherer is not None:
            self.gatherer.gather(self.curv_log, self.spec.run_id)
        if self.run_log is not None:
            self.offsets["run"] = self.run_log.offset()
            self.offsets["curvature"] = self.curv_log.offset()
        sharded = None
        if self.opts.fsdp:  # model and optimizer through torch.distributed.checkpoint, the rest per rank
            sharded = sharded_state(self.raw_model, self.opt.optimizer)
            model_state, opt_state = None, {"name": self.opt.name, "grad_evals": self.opt.grad_evals}
        else:
            model_state, opt_state = self.raw_model.state_dict(), self.opt.state_dict()
        payload = {"run_id": self.spec.run_id, "iteration": self.iteration, "total_iters": self.total,
                   "wall_s": self.wall, "cpu_s": self.cpu, "model": model_state,
                   "optimizer": opt_state, "rng": rng_state(self.ctx.device),
                   "offsets": dict(self.offsets), "saved_at": now_iso()}
        if self.amp.enabled:
            payload["amp"] = self.amp.state_dict()
        self.store.save(self.iteration, payload, self.ctx.barrier, sharded)
        self._saved_at = time.monotonic()
        if self.manifest is not None:
            self.manifest.update(iterations_done=self.iteration, train_s=round(self.wall, 3), cpu_s=round(self.cpu, 3))
            if self.amp.enabled:
                self.manifest.update(amp=self.amp.record())
            self.manifest.save()

    def start(self) -> None:
        """The evaluation at iteration 0 of a new run (outside the clock); puts the model in train mode."""
        if self.iteration == 0:
            self._evaluate()
        self.raw_model.train()

    def advance(self) -> None:
        """One training iteration inside the run's clock, then evaluation and checkpoint outside it."""
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if self._batches is None:
            self._batches = self._batch_stream()
        x, y = next(self._batches)
        self.lr = self.schedule.apply(self.iteration)
        raw_model, model, params, amp, opt = self.raw_model, self.model, self._params, self.amp, self.opt

        def closure(backward: bool = True) -> torch.Tensor:
            if not backward:
                with amp.autocast():
                    return F.cross_entropy(raw_model(x), y)
            for p in params:  # Module.zero_grad(set_to_none=True) without walking the module tree each time
                p.grad = None
            with amp.autocast():
                loss = F.cross_entropy(model(x), y)
            opt.loss_scale = amp.scale
            amp.backward(loss, params)  # float16: unscaled gradients, or none at all when the step is skipped
            return loss.detach()

        loss = self.ctx.mean(self.opt.step(closure))  # the global batch's loss (each rank sees its shard)
        self.iteration += 1
        iteration = self.iteration
        records = self.opt.curvature_records()
        if self._sync:
            torch.cuda.synchronize(self.ctx.device)
        # the clocks stop here, before logging; the CPU clock is a system call, read twice per iteration
        cpu1, wall1 = time.process_time(), time.perf_counter()
        self.wall += wall1 - wall0
        self.cpu += cpu1 - cpu0
        if self.run_log is not None:
            if iteration % self._log_interval == 0 or iteration == self.total:
                # on the CPU the loss is read at once (nothing to wait for); on a GPU it stays a tensor until
                # the log flushes (one device sync per flush instead of one per step)
                value = loss.item() if self._host_loss else loss
                self.run_log.write_values(RunRow(
                    *self._ident_cells, "train", round(iteration / self.ipe, 6), iteration, train_loss=value,
                    lr=self.lr, wall_s=round(self.wall, 6), grad_evals=self.opt.grad_evals, cpu_s=round(self.cpu, 6)))
            if records and self.gatherer is None:
                self.curv_log.write(self.spec.run_id, iteration, records)
        if records and self.gatherer is not None:
            self.gatherer.add(iteration, records)

        if self.spec.workload.stop_on_nonfinite:
            if self.ctx.enabled:
                if iteration % NONFINITE_CHECK_EVERY == 0 or iteration == self.total:
                    self.diverged = self.ctx.sum([0.0 if bool(torch.isfinite(loss)) else 1.0])[0] > 0
            else:  # a non-finite loss stays non-finite: the next logged row shows it
                self.diverged = self.run_log.nonfinite_seen or (
                    iteration == self.total and not bool(torch.isfinite(loss)))
        end = self.done
        if end or iteration % self.eval_interval == 0:
            self._evaluate()
        if not end and (iteration % self.spec.workload.checkpoint_interval == 0 or (
                iteration % self.ipe == 0 and time.monotonic() - self._saved_at >= EPOCH_CHECKPOINT_SECONDS)):
            self._checkpoint()

    def step(self) -> None:
        """:meth:`advance`, with a numerical failure of the optimizer (:data:`NUMERICAL_ERRORS`) ending the run
        as diverged (the error goes to the manifest) instead of raising."""
        try:
            self.advance()
        except NUMERICAL_ERRORS as err:
            self.diverged = True
            self.error = f"{type(err).__name__}: {err}"
            print(f"[{self.spec.run_id}] diverged at iteration {self.iteration + 1}: {self.error}", file=sys.stderr)

    def fail(self, err: BaseException) -> dict[str, Any]:
        """Record an unexpected error: the manifest says ``failed`` (so a rerun retries from the last
        checkpoint), the logs are closed; returns the run's summary."""
        self.error = f"{type(err).__name__}: {err}"
        if self.ctx.is_main:
            self.close_logs()
            self.manifest.update(status="failed", end_time=now_iso(), error=self.error)
            self.manifest.save()
        return {"run_id": self.spec.run_id, "status": "failed", "error": self.error}

    def close_logs(self) -> None:
        """Write what the logs buffer and close them: the CSVs, then the TensorBoard copy (again: nothing).
        :meth:`finish` and :meth:`fail` call it, and so does a crash that ends the process."""
        if self.run_log is not None:
            self.run_log.close()
        if self.curv_log is not None:
            self.curv_log.close()
        if self.tensorboard is not None:
            self.tensorboard.close()

    def finish(self) -> dict[str, Any]:
        """Close the logs, mark the manifest finished, drop the checkpoint; returns the run's summary."""
        if self.gatherer is not None:
            self.gatherer.gather(self.curv_log, self.spec.run_id)
        summary = {"run_id": self.spec.run_id, "status": "finished",
                   "outcome": "diverged" if self.diverged else "completed", "iterations": self.iteration,
                   "train_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3), **self.last_eval}
        if self.error is not None:
            summary["error"] = self.error
        if self.ctx.is_main:
            self.close_logs()
            if self.amp.enabled:
                self.manifest.update(amp=self.amp.record())
            self.manifest.update(status="finished", end_time=now_iso(), iterations_done=self.iteration,
                                 train_s=round(self.wall, 3), cpu_s=round(self.cpu, 3), outcome=summary["outcome"],
                                 grad_evals=self.opt.grad_evals,
                                 final_test_loss=self.last_eval.get("test_loss"),
                                 final_test_acc=self.last_eval.get("test_acc"), error=self.error)
            self.manifest.save()
        self.ctx.barrier()
        if not self.opts.keep_checkpoint:
            self.store.clear()
        return summary


def load_data(spec: RunSpec, ctx: DistContext) -> DataSource:
    """Seed every RNG with the run's seed, then load its data: the state every run starts from."""
    seed_everything(spec.seed)
    return build_data(spec.workload.data, ctx.device)


def train(spec: RunSpec, opts: RunOptions, ctx: DistContext) -> dict[str, Any]:
    """Run (or resume, or skip) one run alone in this process; returns a small summary dict."""
    skipped = skip_finished(spec, opts)
    if skipped is not None:
        return skipped
    run = Run(spec, opts, ctx, load_data(spec, ctx))
    from tqdm import tqdm

    try:
        run.start()
        with tqdm(total=run.total, initial=run.iteration, desc=spec.run_id, dynamic_ncols=True, leave=False,
                  disable=not (opts.progress and ctx.is_main)) as bar:
            while not run.done:
                run.step()
                bar.update(1)
                if run.last_eval and not bar.disable:
                    bar.set_postfix(test_acc=f"{run.last_eval['test_acc']:.4f}", refresh=False)
    except Exception as err:
        # an unexpected error, as in lockstep: the manifest says failed (with the error) and the run's
        # summary says so; a rerun resumes from the last checkpoint
        import traceback

        traceback.print_exc()
        return run.fail(err)
    except BaseException:
        # an interrupt: the rows so far reach the CSV and the TensorBoard files; the manifest still says
        # running, and a rerun resumes from the last checkpoint
        run.close_logs()
        raise
    return run.finish()

