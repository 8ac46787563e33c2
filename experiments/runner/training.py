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

import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from experiments.runner.build import build_parts
from experiments.runner.checkpoint import CheckpointStore
from experiments.runner.csvlog import CsvLog
from experiments.runner.dist_context import DistContext
from experiments.runner.drift import config_drift, drift_message
from experiments.runner.evaluate import evaluate
from experiments.runner.manifest import device_description, git_state, is_finished
from experiments.runner.recording import ManifestSink, Recorder, RecordGather, Sink, TensorBoardSink
from experiments.runner.resume import restore, snapshot
from experiments.runner.schema import RunRow
from experiments.runner.spec import RunSpec
from experiments.workloads.data import build_data
from experiments.workloads.data.base import DataSource

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


def skip_finished(spec: RunSpec, opts: RunOptions) -> dict[str, Any] | None:
    """The summary of a finished run that is not forced to start over (None: the run must train).
    ValueError (:func:`drift_message`) when the run, finished or resumable, was recorded with optimizer
    settings that differ from what this code builds: it would be skipped as done, or resumed as another."""
    if opts.force:
        return None
    drift = config_drift(spec, spec.manifest_path(opts.out))
    if drift:
        raise ValueError(drift_message(spec.run_id, drift))
    if is_finished(spec.manifest_path(opts.out)):
        return {"run_id": spec.run_id, "status": "skipped (finished)"}
    return None


class Run:
    """One run: its parts (:mod:`experiments.runner.build`), where it stands (:mod:`experiments.runner.resume`)
    and its records (:mod:`experiments.runner.recording`), advanced one iteration at a time.

    Construct it with the global RNGs in the state a fresh process reaches after seeding and loading
    the data (what :func:`train` does); it builds the model and optimizer from them, or restores its
    last checkpoint. Then :meth:`start`, :meth:`advance` until :attr:`done`, :meth:`finish`.
    """

    def __init__(self, spec: RunSpec, opts: RunOptions, ctx: DistContext, data: DataSource) -> None:
        self.spec, self.opts, self.ctx, self.data = spec, opts, ctx, data
        self.store = CheckpointStore(spec.checkpoint_dir(opts.checkpoint_root), ctx.rank, ctx.world_size,
                                     sharded=opts.fsdp)
        if opts.force:
            ctx.barrier()
            self.store.clear()
            ctx.barrier()
        self.parts = parts = build_parts(spec, ctx, data, opts.fsdp)
        self.raw_model, self.model, self.opt, self.amp = parts.raw_model, parts.model, parts.opt, parts.amp
        self.eval_data = parts.eval_data
        self.ipe, self.total, self.eval_interval = parts.iterations_per_epoch, parts.total, parts.eval_interval
        self.progress = restore(parts, self.store, spec, ctx, spec.csv_path(opts.out).exists(), opts.fsdp)
        self.resumed_from = self.progress.resumed_from
        # with block sharding each rank sees the pairs of its own blocks; row-sharded (fsdp) every rank sees all
        gather = RecordGather(ctx) if ctx.enabled and not opts.fsdp else None
        self.recorder = Recorder(spec.run_id, spec.csv_path(opts.out), spec.curvature_path(opts.out),
                                 self.progress.offsets, self.resumed_from is not None, opts.flush_rows,
                                 self._sinks() if ctx.is_main else [], ctx.is_main, gather)
        self.lr = parts.schedule.apply(max(self.iteration - 1, 0))
        self.last_eval: dict[str, float] = {}
        self.diverged = False
        self.error: str | None = None
        self._batches = None
        self._ident_cells = [spec.run_id, spec.workload.name, spec.optimizer, spec.seed]
        self._host_loss = ctx.device.type == "cpu"
        self._log_interval = spec.workload.log_interval
        self._params = list(self.raw_model.parameters())
        self._saved_at = time.monotonic()
        self._sync = ctx.device.type == "cuda"  # CUDA work is asynchronous: wait for it inside the clock

    # where the run stands (the checkpoint holds it)
    iteration = property(lambda self: self.progress.iteration)
    wall = property(lambda self: self.progress.wall)
    cpu = property(lambda self: self.progress.cpu)

    @property
    def run_log(self) -> CsvLog | None:
        """The run CSV's writer (rank 0 only)."""
        return self.recorder.run_log

    def _sinks(self) -> list[Sink]:
        spec, opts, ctx, cfg = self.spec, self.opts, self.ctx, self.spec.workload
        sinks: list[Sink] = []
        if opts.tensorboard is not None:
            sinks.append(TensorBoardSink(opts.tensorboard / spec.run_id, self.resumed_from))
        base = {
            "run_id": spec.run_id, "workload": cfg.name, "optimizer": spec.optimizer, "seed": spec.seed,
            "config": cfg.to_dict(), "optimizer_settings": spec.optimizer_settings,
            "optimizer_config": spec.optimizer_config(),
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
        sinks.append(ManifestSink(spec.manifest_path(opts.out), base, self.resumed_from, self.iteration))
        return sinks

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
        with self.opt.evaluation_weights(), self.amp.autocast():  # schedule-free: its eval-mode weights
            loss, acc, secs = evaluate(self.raw_model, self.eval_data, self.spec.workload.eval_batch_size, self.ctx)
        self.last_eval.update(test_loss=loss, test_acc=acc)
        self.recorder.row(RunRow(
            *self._ident_cells, "eval", round(self.iteration / self.ipe, 6), self.iteration, lr=self.lr,
            wall_s=round(self.wall, 6), cpu_s=round(self.cpu, 6), grad_evals=self.opt.grad_evals,
            test_loss=loss, test_acc=acc, eval_s=round(secs, 6)))

    def _checkpoint(self) -> None:
        self.progress.offsets = self.recorder.offsets()
        # a checkpoint holds the weights one evaluates (schedule-free); written before they switch back, since
        # the payload references the live tensors
        with self.opt.evaluation_weights():
            payload, sharded = snapshot(self.parts, self.progress, self.spec, self.ctx, self.opts.fsdp)
            self.store.save(self.iteration, payload, self.ctx.barrier, sharded)
        self._saved_at = time.monotonic()
        fields: dict[str, Any] = {"iterations_done": self.iteration, "train_s": round(self.wall, 3),
                                  "cpu_s": round(self.cpu, 3)}
        if self.amp.enabled:
            fields["amp"] = self.amp.record()
        self.recorder.progress(fields)

    def start(self) -> None:
        """The evaluation at iteration 0 of a new run (outside the clock); puts the model in train mode, and
        the optimizer too where it has modes (a resumed checkpoint holds its eval-mode weights)."""
        if self.iteration == 0:
            self._evaluate()
        self.opt.train_mode()
        self.raw_model.train()

    def advance(self) -> None:
        """One training iteration inside the run's clock, then evaluation and checkpoint outside it."""
        wall0, cpu0 = time.perf_counter(), time.process_time()
        if self._batches is None:
            self._batches = self._batch_stream()
        x, y = next(self._batches)
        self.lr = self.parts.schedule.apply(self.iteration)
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
        progress = self.progress
        progress.iteration += 1
        iteration = progress.iteration
        records = self.opt.curvature_records()
        if self._sync:
            torch.cuda.synchronize(self.ctx.device)
        # the clocks stop here, before logging; the CPU clock is a system call, read twice per iteration
        cpu1, wall1 = time.process_time(), time.perf_counter()
        progress.wall += wall1 - wall0
        progress.cpu += cpu1 - cpu0
        if iteration % self._log_interval == 0 or iteration == self.total:
            # on the CPU the loss is read at once (nothing to wait for); on a GPU it stays a tensor until
            # the log flushes (one device sync per flush instead of one per step)
            value = loss.item() if self._host_loss else loss
            self.recorder.row(RunRow(
                *self._ident_cells, "train", round(iteration / self.ipe, 6), iteration, train_loss=value,
                lr=self.lr, wall_s=round(self.wall, 6), grad_evals=self.opt.grad_evals, cpu_s=round(self.cpu, 6)))
        if records:
            self.recorder.curvature(iteration, records)

        if self.spec.workload.stop_on_nonfinite:
            if self.ctx.enabled:
                if iteration % NONFINITE_CHECK_EVERY == 0 or iteration == self.total:
                    self.diverged = self.ctx.sum([0.0 if bool(torch.isfinite(loss)) else 1.0])[0] > 0
            else:  # a non-finite loss stays non-finite: the next logged row shows it
                self.diverged = self.recorder.nonfinite_seen or (
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
            self.recorder.end({"status": "failed", "error": self.error})
        return {"run_id": self.spec.run_id, "status": "failed", "error": self.error}

    def close_logs(self) -> None:
        """Write what the logs buffer and close them (again: nothing). :meth:`finish` and :meth:`fail` do it,
        and so does a crash that ends the process."""
        self.recorder.close()

    def finish(self) -> dict[str, Any]:
        """Close the logs, mark the manifest finished, drop the checkpoint; returns the run's summary."""
        self.recorder.gather()
        summary = {"run_id": self.spec.run_id, "status": "finished",
                   "outcome": "diverged" if self.diverged else "completed", "iterations": self.iteration,
                   "train_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3), **self.last_eval}
        if self.error is not None:
            summary["error"] = self.error
        if self.ctx.is_main:
            fields: dict[str, Any] = {"amp": self.amp.record()} if self.amp.enabled else {}
            self.recorder.end({**fields, "status": "finished", "iterations_done": self.iteration,
                               "train_s": round(self.wall, 3), "cpu_s": round(self.cpu, 3),
                               "outcome": summary["outcome"], "grad_evals": self.opt.grad_evals,
                               "final_test_loss": self.last_eval.get("test_loss"),
                               "final_test_acc": self.last_eval.get("test_acc"), "error": self.error})
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

