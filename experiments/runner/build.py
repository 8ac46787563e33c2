"""Building a run's parts from its spec: the model (and its DDP or FSDP2 wrapper), the optimizer, mixed
precision, the learning-rate schedule and the run's length. No state is read here (restoring a
checkpoint: :mod:`experiments.runner.resume`) and nothing is written (:mod:`experiments.runner.recording`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from torch import nn

from baselines.base import TrainingOptimizer
from experiments.runner.amp import AmpError, MixedPrecision
from experiments.runner.dist_context import DistContext
from experiments.runner.fsdp import EvenTestBatches, shard_model
from experiments.runner.preflight import build_checked_model, build_checked_optimizer
from experiments.runner.spec import RunSpec
from experiments.workloads.data.base import DataSource
from experiments.workloads.data.sampling import iterations_per_epoch
from experiments.workloads.schedule import LRSchedule


@dataclass
class RunParts:
    """What trains: ``raw_model`` (the module itself), ``model`` (its DDP wrapper, or itself), the data
    the evaluation reads, the optimizer, mixed precision, the schedule, and the run's lengths."""

    raw_model: nn.Module
    model: nn.Module
    eval_data: DataSource
    opt: TrainingOptimizer
    amp: MixedPrecision
    schedule: LRSchedule
    iterations_per_epoch: int
    total: int
    eval_interval: int


def optimizer_settings(spec: RunSpec, ctx: DistContext, sharded: bool = False) -> dict[str, Any]:
    """The run's optimizer settings; optimizers that distribute their curvature work (mlbfgs blocks, K-FAC
    inversions) take the process group, except on sharded (fully_shard) parameters, whose mesh gives it."""
    from baselines import config_class

    settings = dict(spec.optimizer_settings)
    fields = getattr(config_class(spec.optimizer), "__dataclass_fields__", {})
    if ctx.enabled and not sharded and "process_group" in fields:
        settings["process_group"] = dist.group.WORLD
    return settings


def build_parts(spec: RunSpec, ctx: DistContext, data: DataSource, fsdp: bool) -> RunParts:
    """The parts of ``spec`` for ``data`` on ``ctx``'s device (``fsdp``: the model under fully_shard)."""
    cfg = spec.workload
    raw_model = build_checked_model(spec, data.input_shape, data.num_classes).to(ctx.device)
    model: nn.Module = raw_model
    eval_data: DataSource = data
    if fsdp:  # sharded in place: the model's forward pass gathers the weights on every rank
        model = raw_model = shard_model(raw_model, ctx.device)
        eval_data = EvenTestBatches(data, ctx.device)  # type: ignore[assignment]
    elif ctx.enabled:
        model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    ipe = iterations_per_epoch(data.num_train, cfg.batch_size, ctx.world_size)
    total = cfg.epochs * ipe
    total = total if spec.max_iters is None else min(total, spec.max_iters)
    opt = build_checked_optimizer(spec, raw_model, optimizer_settings(spec, ctx, fsdp))
    if fsdp and opt.state_dict()["extra"]:
        raise ValueError(f"--fsdp: optimizer {spec.optimizer!r} keeps state outside its torch.optim.Optimizer, "
                         "which the sharded checkpoints do not save")
    if cfg.amp == "fp16" and (opt.grad_evals_per_step != 1.0 or getattr(opt, "needs_closure", False)):
        raise AmpError(f"{spec.run_id}: amp 'fp16' (loss scaling) needs one gradient evaluation per step; "
                       f"{spec.optimizer} evaluates {opt.grad_evals_per_step:g} (or calls its closure "
                       "itself): use amp 'bf16' (no scaling)")
    amp = MixedPrecision(cfg.amp, ctx.device, opt.optimizer)
    schedule = LRSchedule(opt.optimizer, cfg.schedule, total)
    return RunParts(raw_model, model, eval_data, opt, amp, schedule, ipe, total, cfg.eval_interval or ipe)
