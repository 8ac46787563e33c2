"""A run's checkpoint: what it holds (:func:`snapshot`) and how a run resumes from it (:func:`restore`).

Model and optimizer state, the global RNGs, the counters and clocks, and where the CSVs ended (a
resumed run truncates them back, so no row is written twice). Under FSDP2 the model and optimizer go
through ``torch.distributed.checkpoint`` (resharded on load) and the rest per rank.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from experiments.runner.build import RunParts
from experiments.runner.checkpoint import CheckpointStore, rng_state, set_rng_state
from experiments.runner.dist_context import DistContext
from experiments.runner.fsdp import load_sharded_state, sharded_state
from experiments.runner.manifest import now_iso
from experiments.runner.spec import RunSpec


@dataclass
class Progress:
    """Where a run stands: iterations done, its clocks, where its CSVs end, the checkpoint it resumed from."""

    iteration: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    offsets: dict[str, int | None] = field(default_factory=lambda: {"run": None, "curvature": None})
    resumed_from: int | None = None


def restore(parts: RunParts, store: CheckpointStore, spec: RunSpec, ctx: DistContext, csv_exists: bool,
            fsdp: bool) -> Progress:
    """Load the last checkpoint into ``parts`` (and the global RNGs); a fresh :class:`Progress` when there
    is none, or when the run CSV it belongs to is gone (the run starts over). ValueError when the
    checkpoint belongs to another run."""
    resume_at = store.latest_iteration()
    if resume_at is not None and ctx.is_main and not csv_exists:
        print(f"[{spec.run_id}] checkpoint without its CSV: starting over", file=sys.stderr)
        resume_at = None
    if resume_at is None:
        return Progress()
    payload = store.load(resume_at, ctx.device)
    if payload["run_id"] != spec.run_id or payload["total_iters"] != parts.total:
        raise ValueError(
            f"checkpoint in {store.dir} belongs to a different run (run id {payload['run_id']}, "
            f"{payload['total_iters']} iterations); use --force to start over"
        )
    if fsdp:  # the shards through torch.distributed.checkpoint; the counters from this rank's file
        state = sharded_state(parts.raw_model, parts.opt.optimizer)
        store.load_sharded(resume_at, state)
        load_sharded_state(parts.raw_model, parts.opt.optimizer, state)
        parts.opt.grad_evals = int(payload["optimizer"]["grad_evals"])
    else:
        parts.raw_model.load_state_dict(payload["model"])
        parts.opt.load_state_dict(payload["optimizer"])
    set_rng_state(payload["rng"], ctx.device)
    if parts.amp.enabled:
        parts.amp.load_state_dict(payload["amp"])
    return Progress(payload["iteration"], payload["wall_s"], payload.get("cpu_s", 0.0), payload["offsets"], resume_at)


def snapshot(parts: RunParts, progress: Progress, spec: RunSpec, ctx: DistContext,
             fsdp: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(this rank's checkpoint payload, the sharded state for ``torch.distributed.checkpoint`` or None)."""
    sharded = None
    if fsdp:  # model and optimizer through torch.distributed.checkpoint, the rest per rank
        sharded = sharded_state(parts.raw_model, parts.opt.optimizer)
        model_state, opt_state = None, {"name": parts.opt.name, "grad_evals": parts.opt.grad_evals}
    else:
        model_state, opt_state = parts.raw_model.state_dict(), parts.opt.state_dict()
    payload = {"run_id": spec.run_id, "iteration": progress.iteration, "total_iters": parts.total,
               "wall_s": progress.wall, "cpu_s": progress.cpu, "model": model_state,
               "optimizer": opt_state, "rng": rng_state(ctx.device),
               "offsets": dict(progress.offsets), "saved_at": now_iso()}
    if parts.amp.enabled:
        payload["amp"] = parts.amp.state_dict()
    return payload, sharded
