"""Worker functions for the FSDP2 (fully_shard) tests of MLBFGS (importable by spawned processes)."""

from __future__ import annotations

import dataclasses
import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch.profiler import ProfilerActivity, profile

from mlbfgs import MLBFGS
from tests.support.dist_workers import init

GLOBAL_BATCH = 16
STEPS = 20
#: several pairs in 20 steps (t = 4, 7, ..., 19) and a ring of 2 that wraps
OPT_KW = dict(lr=0.05, update_period=3, beta=0.9, history_size=2, pair_momentum=0.3)
CONFIGS = [(m, b, n) for m in ("mlp", "cnn") for b in ("model", "layer") for n in ("global", "kl", "none")]

#: every collective of torch.distributed a step could call
COLLECTIVES = (
    "all_reduce", "all_reduce_coalesced", "all_gather", "all_gather_into_tensor", "all_gather_single",
    "all_gather_object", "reduce_scatter", "reduce_scatter_tensor", "broadcast", "broadcast_object_list",
    "reduce", "gather", "scatter", "all_to_all", "all_to_all_single", "barrier", "send", "recv", "isend", "irecv",
)


def model(name: str) -> torch.nn.Module:
    """A small float64 MLP or CNN (same weights on every call)."""
    torch.manual_seed(0)
    if name == "mlp":
        net = torch.nn.Sequential(
            torch.nn.Linear(12, 20), torch.nn.Tanh(), torch.nn.Linear(20, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3),
        )
    else:
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Conv2d(4, 6, 3), torch.nn.Tanh(),
            torch.nn.Flatten(), torch.nn.Linear(6 * 6 * 6, 3),
        )
    return net.double()


def batch(name: str, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``."""
    gen = torch.Generator().manual_seed(1000 + step)
    shape = (GLOBAL_BATCH, 12) if name == "mlp" else (GLOBAL_BATCH, 1, 8, 8)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    y = (x.reshape(GLOBAL_BATCH, -1)[:, :3] * 2).argmax(1)
    return x, y


def sharded_model(name: str, mesh, per_layer: bool = False) -> torch.nn.Module:
    """``model(name)`` under ``fully_shard``: the root only (one all-gather and one reduce-scatter per
    pass, which keeps the tests quick on few cores), or every layer and the root. Either way each
    parameter is a DTensor sharded on dim 0."""
    from torch.distributed.fsdp import fully_shard

    net = model(name)
    if per_layer:
        for m in net:
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                fully_shard(m, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


def local_backward(net: torch.nn.Module, name: str, step: int, rank: int, world: int) -> None:
    """Rank ``rank`` of ``world`` takes its share of the global batch; FSDP2 averages the gradients."""
    x, y = batch(name, step)
    n = GLOBAL_BATCH // world
    net.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(net(x[rank * n:(rank + 1) * n]), y[rank * n:(rank + 1) * n]).backward()


def single_process(name: str, blocks: str, norm: str, steps: int = STEPS) -> tuple[list[torch.Tensor], MLBFGS]:
    """The reference: one process, the whole global batch."""
    net = model(name)
    opt = MLBFGS(net.parameters(), blocks=blocks, direction_norm=norm, **OPT_KW)
    for step in range(steps):
        x, y = batch(name, step)
        net.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in net.parameters()], opt


@contextmanager
def counting_collectives() -> Iterator[Counter]:
    """Count the calls of every torch.distributed collective inside the block."""
    counts: Counter = Counter()
    saved = {n: getattr(dist, n) for n in COLLECTIVES if hasattr(dist, n)}

    def wrap(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)
        return counted

    for n, fn in saved.items():
        setattr(dist, n, wrap(n, fn))
    try:
        yield counts
    finally:
        for n, fn in saved.items():
            setattr(dist, n, fn)


def equivalence_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """On 4 processes: every configuration of ``CONFIGS`` on the 4-rank mesh, and on two 2-rank meshes
    (ranks 0-1 and 2-3, half of the configurations each, side by side: one start of the processes
    serves both world sizes). Saves per rank and mesh size the gathered parameters, the curvature
    bytes, the collectives of each step and whether it formed a pair; then a non-finite gradient on
    rank 0 only, and the allocations of a step after warm-up."""
    from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

    assert world == 4
    init(rank, world, init_file, timeout_s=120.0)
    full = init_device_mesh("cpu", (world,))
    halves = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    alone = dist.new_group([0])
    half = DeviceMesh.from_group(halves[rank // 2], "cpu")
    out: dict = {4: train_configs(full, CONFIGS), 2: train_configs(half, CONFIGS[rank // 2::2])}
    out["skip"] = skip_check(full)
    out["allocations"] = allocation_check(full)
    one = DeviceMesh.from_group(alone, "cpu") if rank == 0 else None
    out["dcp"] = checkpoint_check(full, half, halves[rank // 2], one, alone, os.path.join(out_dir, "ckpt"))
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finish()


def train_configs(mesh, configs: list[tuple[str, str, str]]) -> dict:
    """``STEPS`` steps of each configuration on ``mesh``."""
    rank, world = mesh.get_local_rank(), mesh.size()
    out: dict = {}
    for name, blocks, norm in configs:
        net = sharded_model(name, mesh)
        opt = MLBFGS(net.parameters(), blocks=blocks, direction_norm=norm, **OPT_KW)
        steps = []
        for step in range(STEPS):
            local_backward(net, name, step, rank, world)
            with counting_collectives() as counts:
                opt.step()
            steps.append((dict(counts), bool(opt.last_pairs)))
        out[(name, blocks, norm)] = {
            "params": [p.full_tensor().detach() for p in net.parameters()],
            "bytes": opt.curvature_bytes(),
            "steps": steps,
            "stats": opt.stats,
        }
    return out


#: the configuration of the checkpoint check, and the steps before and after the checkpoint
DCP_CONFIG, DCP_SAVE_AT, DCP_AFTER = ("cnn", "layer", "global"), 8, 6


def checkpoint_check(full, half, half_group, one, one_group, path: str) -> dict:
    """Ranks 0-1 train ``DCP_SAVE_AT`` steps on a 2-rank mesh, save with torch.distributed.checkpoint
    (the state-dict helpers) and train ``DCP_AFTER`` more; a fresh 2-rank model and optimizer load the
    checkpoint and train the same steps (bit-exact expected). Then all 4 ranks, and rank 0 alone, load
    the same checkpoint (resharded) and train the same steps. Returns the gathered parameters."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    name, blocks, norm = DCP_CONFIG

    def build(mesh):
        net = sharded_model(name, mesh)
        return net, MLBFGS(net.parameters(), blocks=blocks, direction_norm=norm, **OPT_KW)

    def train(net, opt, mesh, start: int) -> list[torch.Tensor]:
        for step in range(start, start + DCP_AFTER):
            local_backward(net, name, step, mesh.get_local_rank(), mesh.size())
            opt.step()
        return [p.full_tensor().detach() for p in net.parameters()]

    def resumed(mesh, group) -> list[torch.Tensor]:
        net, opt = build(mesh)
        state = {"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)}
        dcp.load(state, checkpoint_id=path, process_group=group)
        set_model_state_dict(net, state["model"])
        set_optimizer_state_dict(net, opt, state["optim"])
        return train(net, opt, mesh, DCP_SAVE_AT)

    rank = dist.get_rank()
    out: dict = {}
    if rank < 2:
        net, opt = build(half)
        for step in range(DCP_SAVE_AT):
            local_backward(net, name, step, half.get_local_rank(), half.size())
            opt.step()
        state = {"model": get_model_state_dict(net), "optim": get_optimizer_state_dict(net, opt)}
        dcp.save(state, checkpoint_id=path, process_group=half_group)
        out["straight"] = train(net, opt, half, DCP_SAVE_AT)
        out["2->2"] = resumed(half, half_group)
    dist.barrier()
    out["2->4"] = resumed(full, None)
    if rank == 0:
        out["2->1"] = resumed(one, one_group)
    dist.barrier()
    return out


def skip_check(mesh) -> dict:
    """A NaN in rank 0's shard of the gradient only: every rank skips the step, before the averages move."""
    rank, world = mesh.get_local_rank(), mesh.size()
    net = sharded_model("mlp", mesh, per_layer=True)
    opt = MLBFGS(net.parameters(), **OPT_KW)
    for step in range(5):
        local_backward(net, "mlp", step, rank, world)
        opt.step()
    before = [p.to_local().clone() for p in net.parameters()]
    local_backward(net, "mlp", 5, rank, world)
    if rank == 0:
        next(iter(net.parameters())).grad.to_local()[0].fill_(float("nan"))
    opt.step()
    unchanged = all(torch.equal(a, p.to_local()) for a, p in zip(before, net.parameters()))
    local_backward(net, "mlp", 6, rank, world)
    opt.step()
    finite = all(bool(torch.isfinite(p.to_local()).all()) for p in net.parameters())
    return {"stats": opt.stats, "unchanged": unchanged, "finite_after": finite}


def allocation_check(mesh) -> list[str]:
    """The tensor allocations of non-pair steps after warm-up (profiler memory events)."""
    rank, world = mesh.get_local_rank(), mesh.size()
    net = sharded_model("mlp", mesh)
    opt = MLBFGS(net.parameters(), blocks="layer", update_period=1, history_size=2, lr=0.01, direction_norm="global")
    local_backward(net, "mlp", 0, rank, world)
    for _ in range(5):  # fill the rings, keeping the same gradient
        opt.step()
    # no pair in the profiled steps, yet past the first period, so the direction is rescaled
    opt.config = dataclasses.replace(opt.config, update_period=1000)
    opt.state[next(iter(net.parameters()))]["mlbfgs"]["step"] = 1500
    opt.step()
    events = []
    for norm in ("global", "kl", "none"):
        opt.config = dataclasses.replace(opt.config, direction_norm=norm)
        opt.step()
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            for _ in range(3):
                opt.step()
        events += [f"{norm}: {e.name}" for e in prof.events() if e.cpu_memory_usage > 0]
    return events


def finish() -> None:
    """Leave together (see tests.support.dist_workers.finish)."""
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def check_rows_divided(outs: list[dict], single: Any, world: int) -> int:
    """Assert that the ranks' curvature rows (``out["bytes"]`` less the replicated Gram/compact/gamma)
    add up to the single process's and each holds its 1/world share up to a row per parameter (float64
    state, history ``OPT_KW["history_size"]``). Returns the replicated bytes per rank."""
    m, elem = OPT_KW["history_size"], 8
    replicated = len(single.blocks) * ((2 * m) ** 2 * 8 + (2 * m) ** 2 * elem + elem)
    row_norms = len(single.blocks) * 2 * m * elem  # kept by the single process for reduced dtypes only
    single_rows = single.curvature_bytes() - replicated - row_norms
    per_rank = [out["bytes"] - replicated for out in outs]
    assert sum(per_rank) == single_rows
    vectors = 4 + (2 if OPT_KW["pair_momentum"] > 0 else 0) + 2 * m
    slack = sum(vectors * (p.numel() // p.shape[0]) * elem for b in single.blocks for p in b)
    assert all(abs(r - single_rows / world) <= slack for r in per_rank), (per_rank, single_rows / world, slack)
    assert max(per_rank) < single_rows / world * 1.5
    return replicated
