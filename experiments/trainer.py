"""The training loop of one run: resumable, logged to CSV, driven through ``TrainingOptimizer.step``.

Order within an iteration t (1-based after the step): set the LR for step t-1, step, log the train
row; then, outside the training clock, evaluate (every ``eval_interval`` and at the end) and
checkpoint (every ``checkpoint_interval``, at epoch ends). The data position is a function of the
iteration, so a checkpoint at iteration t resumes with the batch of iteration t+1.
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
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from experiments.checkpoint import CheckpointStore, rng_state, set_rng_state
from experiments.csvlog import CURVATURE_COLUMNS, RUN_COLUMNS, CsvLog
from experiments.data import build_data
from experiments.data.sampling import iterations_per_epoch
from experiments.distributed import DistContext
from experiments.evaluate import evaluate
from experiments.manifest import Manifest, device_description, git_state, is_finished, now_iso
from experiments.models import build_model
from experiments.runspec import RunSpec
from experiments.schedule import LRSchedule

NONFINITE_CHECK_EVERY = 25  # iterations between cross-rank divergence checks (distributed runs only)


@dataclass(frozen=True)
class RunOptions:
    out: Path = Path("results/runs")
    checkpoint_root: Path = Path("results/checkpoints")
    threads: int = 1
    progress: bool = False
    force: bool = False  # discard a finished manifest / existing checkpoint and start over
    keep_checkpoint: bool = False  # keep the last checkpoint of a finished run
    command: str = ""  # the command line, for the manifest
    flush_rows: int = 64  # CSV rows buffered before a write (rows are also written every 2 s)


def progress_enabled() -> bool:
    """tqdm bars only on a terminal, never under CI."""
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true", "yes")


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _optimizer_settings(spec: RunSpec, ctx: DistContext) -> dict[str, Any]:
    from baselines import config_class

    settings = dict(spec.optimizer_settings)
    # optimizers that distribute their curvature work (mlbfgs blocks, K-FAC inversions) take the group
    if ctx.enabled and "process_group" in getattr(config_class(spec.optimizer), "__dataclass_fields__", {}):
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
        if resuming and resume_offset is not None:
            self.log = CsvLog(path, CURVATURE_COLUMNS, resume_offset=resume_offset, max_rows=max_rows)
        elif path.exists():
            path.unlink()

    def write(self, run_id: str, iteration: int, records: list[dict[str, Any]]) -> None:
        if self.log is None:
            self.log = CsvLog(self.path, CURVATURE_COLUMNS, max_rows=self.max_rows)
        for rec in records:
            self.log.write(
                {"run_id": run_id, "iteration": iteration, "block": rec["block"], "mu": rec["mu"],
                 "accepted": rec["accepted"]}
            )

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


def train(spec: RunSpec, opts: RunOptions, ctx: DistContext) -> dict[str, Any]:
    """Run (or resume, or skip) one run; returns a small summary dict."""
    from baselines import build_optimizer

    cfg = spec.workload
    manifest_path = spec.manifest_path(opts.out)
    store = CheckpointStore(spec.checkpoint_dir(opts.checkpoint_root), ctx.rank, ctx.world_size)
    if opts.force:
        ctx.barrier()
        store.clear()
        ctx.barrier()
    elif is_finished(manifest_path):
        return {"run_id": spec.run_id, "status": "skipped (finished)"}

    _seed_everything(spec.seed)
    data = build_data(cfg.data, ctx.device)
    raw_model = build_model(cfg.model, data.input_shape, data.num_classes).to(ctx.device)
    model: nn.Module = raw_model
    if ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    ipe = iterations_per_epoch(data.num_train, cfg.batch_size, ctx.world_size)
    total = cfg.epochs * ipe if spec.max_iters is None else min(cfg.epochs * ipe, spec.max_iters)
    eval_interval = cfg.eval_interval or ipe
    opt = build_optimizer(spec.optimizer, raw_model, **_optimizer_settings(spec, ctx))
    schedule = LRSchedule(opt.optimizer, cfg.schedule, total)

    iteration, wall, offsets = 0, 0.0, {"run": None, "curvature": None}
    resume_at = store.latest_iteration()
    if resume_at is not None and ctx.is_main and not spec.csv_path(opts.out).exists():
        print(f"[{spec.run_id}] checkpoint without its CSV: starting over", file=sys.stderr)
        resume_at = None
    if resume_at is not None:
        payload = store.load(resume_at, ctx.device)
        if payload["run_id"] != spec.run_id or payload["total_iters"] != total:
            raise ValueError(
                f"checkpoint in {store.dir} belongs to a different run (run id {payload['run_id']}, "
                f"{payload['total_iters']} iterations); use --force to start over"
            )
        raw_model.load_state_dict(payload["model"])
        opt.load_state_dict(payload["optimizer"])
        set_rng_state(payload["rng"], ctx.device)
        iteration, wall, offsets = payload["iteration"], payload["wall_s"], payload["offsets"]

    run_log = curv_log = manifest = None
    if ctx.is_main:
        run_log = CsvLog(spec.csv_path(opts.out), RUN_COLUMNS, resume_offset=offsets["run"],
                         max_rows=opts.flush_rows)
        curv_log = _CurvatureLog(spec.curvature_path(opts.out), offsets["curvature"], resume_at is not None,
                                 opts.flush_rows)
        base = {
            "run_id": spec.run_id, "workload": cfg.name, "optimizer": spec.optimizer, "seed": spec.seed,
            "config": cfg.to_dict(), "optimizer_settings": spec.optimizer_settings,
            "optimizer_config": _resolved_optimizer_config(spec),
            "overrides": spec.overrides, "max_iters": spec.max_iters, "total_iters": total,
            "iterations_per_epoch": ipe, "num_train": data.num_train, "num_test": data.num_test,
            "parameters": sum(p.numel() for p in raw_model.parameters()),
            **git_state(), "torch_version": torch.__version__, "python_version": sys.version.split()[0],
            "device": device_description(ctx.device, opts.threads), "world_size": ctx.world_size,
            "threads": opts.threads, "command": opts.command, "csv": spec.csv_path(opts.out).name,
        }
        manifest = Manifest(manifest_path, base, resume_at)
        manifest.update(iterations_done=iteration)
        manifest.save()

    ident = {"run_id": spec.run_id, "workload": cfg.name, "optimizer": spec.optimizer, "seed": spec.seed}
    lr = schedule.apply(max(iteration - 1, 0))
    last_eval: dict[str, float] = {}

    def log_eval() -> None:
        loss, acc, secs = evaluate(raw_model, data, cfg.eval_batch_size, ctx)
        last_eval.update(test_loss=loss, test_acc=acc)
        if run_log is not None:
            run_log.write({**ident, "kind": "eval", "epoch": round(iteration / ipe, 6), "iteration": iteration,
                           "lr": lr, "wall_s": round(wall, 6), "grad_evals": opt.grad_evals,
                           "test_loss": loss, "test_acc": acc, "eval_s": round(secs, 6)})

    gatherer = _RecordGather(ctx) if ctx.enabled else None

    def save_checkpoint() -> None:
        if gatherer is not None:
            gatherer.gather(curv_log, spec.run_id)
        if run_log is not None:
            offsets["run"] = run_log.offset()
            offsets["curvature"] = curv_log.offset()
        payload = {"run_id": spec.run_id, "iteration": iteration, "total_iters": total, "wall_s": wall,
                   "model": raw_model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state(ctx.device),
                   "offsets": dict(offsets), "saved_at": now_iso()}
        store.save(iteration, payload, ctx.barrier)
        if manifest is not None:
            manifest.update(iterations_done=iteration, train_s=round(wall, 3))
            manifest.save()

    if iteration == 0:
        log_eval()

    from tqdm import tqdm

    bar = tqdm(total=total, initial=iteration, desc=spec.run_id, disable=not (opts.progress and ctx.is_main),
               dynamic_ncols=True, leave=False)
    diverged = False
    raw_model.train()
    tick = time.perf_counter()
    while iteration < total and not diverged:
        epoch, start = divmod(iteration, ipe)
        batches = data.train_batches(seed=spec.seed, epoch=epoch, start=start, batch_size=cfg.batch_size,
                                     rank=ctx.rank, world_size=ctx.world_size)
        for x, y in batches:
            lr = schedule.apply(iteration)

            def closure(backward: bool = True, x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                if not backward:
                    return F.cross_entropy(raw_model(x), y)
                raw_model.zero_grad(set_to_none=True)
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss.detach()

            loss = ctx.mean(opt.step(closure))  # the global batch's loss (each rank sees its shard)
            iteration += 1
            records = opt.curvature_records()
            if run_log is not None:
                wall_now = wall + (time.perf_counter() - tick)
                run_log.write({**ident, "kind": "train", "epoch": round(iteration / ipe, 6), "iteration": iteration,
                               "train_loss": loss, "lr": lr, "wall_s": round(wall_now, 6),
                               "grad_evals": opt.grad_evals})
                if records and gatherer is None:
                    curv_log.write(spec.run_id, iteration, records)
            if records and gatherer is not None:
                gatherer.add(iteration, records)
            wall += time.perf_counter() - tick
            bar.update(1)

            if cfg.stop_on_nonfinite:
                if ctx.enabled:
                    if iteration % NONFINITE_CHECK_EVERY == 0 or iteration == total:
                        diverged = ctx.sum([0.0 if bool(torch.isfinite(loss)) else 1.0])[0] > 0
                else:
                    diverged = run_log.nonfinite_seen or (iteration == total and not bool(torch.isfinite(loss)))
            end = iteration == total or diverged
            if end or iteration % eval_interval == 0:
                log_eval()
                if bar.disable is False:
                    bar.set_postfix(test_acc=f"{last_eval['test_acc']:.4f}")
            if not end and (iteration % cfg.checkpoint_interval == 0 or iteration % ipe == 0):
                save_checkpoint()
            tick = time.perf_counter()
            if end:
                break
    bar.close()
    if gatherer is not None:
        gatherer.gather(curv_log, spec.run_id)

    summary = {"run_id": spec.run_id, "status": "finished", "outcome": "diverged" if diverged else "completed",
               "iterations": iteration, "train_s": round(wall, 3), **last_eval}
    if ctx.is_main:
        run_log.close()
        curv_log.close()
        manifest.update(status="finished", end_time=now_iso(), iterations_done=iteration, train_s=round(wall, 3),
                        outcome=summary["outcome"], grad_evals=opt.grad_evals, final_test_loss=last_eval.get(
                            "test_loss"), final_test_acc=last_eval.get("test_acc"))
        manifest.save()
    ctx.barrier()
    if not opts.keep_checkpoint:
        store.clear()
    return summary
