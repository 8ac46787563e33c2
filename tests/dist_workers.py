"""Worker functions for the distributed tests (importable by spawned processes)."""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from mlbfgs import MLBFGS


def init(rank: int, world: int, init_file: str, timeout_s: float = 30.0) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )


def model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(12, 20), torch.nn.Tanh(), torch.nn.Linear(20, 16), torch.nn.Tanh(),
        torch.nn.Linear(16, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3),
    ).double()


def averaged_grads(net: torch.nn.Module, step: int, rank: int, world: int, reduce: bool = True) -> None:
    """Each rank computes the loss on its own shard; all-reduce gives the same averaged gradient."""
    gen = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8 * world, 12, generator=gen, dtype=torch.float64)
    y = (x[:, :3] * 2).argmax(1)
    lo, hi = rank * 8, (rank + 1) * 8
    net.zero_grad()
    torch.nn.functional.cross_entropy(net(x[lo:hi]), y[lo:hi]).backward()
    if reduce and world > 1:
        for p in net.parameters():
            dist.all_reduce(p.grad)
            p.grad /= world


OPT_KW = dict(lr=0.05, update_period=3, beta=0.9, history_size=4, blocks="layer", pair_momentum=0.3)


def equivalence_worker(rank: int, world: int, init_file: str, out_dir: str, norm: str, steps: int) -> None:
    init(rank, world, init_file)
    net = model()
    opt = MLBFGS(net.parameters(), direction_norm=norm, process_group=dist.group.WORLD, **OPT_KW)
    for step in range(steps):
        averaged_grads(net, step, rank, world)
        opt.step()
    torch.save(
        {
            "params": [p.detach() for p in net.parameters()],
            "owned": opt.owned_blocks,
            "bytes": opt.curvature_bytes(),
            "block_states": [b for b, blk in enumerate(opt.blocks) if "mlbfgs_block" in opt.state.get(blk[0], {})],
            "stats": opt.stats,
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    finish()


def single_process_reference(norm: str, steps: int, world: int) -> tuple[list[torch.Tensor], MLBFGS]:
    """The same training with one process: gradients averaged over the same shards by hand."""
    net = model()
    opt = MLBFGS(net.parameters(), direction_norm=norm, **OPT_KW)
    for step in range(steps):
        grads = []
        for r in range(world):
            averaged_grads(net, step, r, world, reduce=False)
            grads.append([p.grad.clone() for p in net.parameters()])
        for i, p in enumerate(net.parameters()):
            p.grad = sum(g[i] for g in grads) / world
        opt.step()
    return [p.detach() for p in net.parameters()], opt


def mismatch_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    init(rank, world, init_file)
    net = model()
    try:
        MLBFGS(net.parameters(), lr=0.1, blocks="model" if rank == 0 else "layer", process_group=dist.group.WORLD)
        msg = "no error"
    except ValueError as err:
        msg = str(err)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(msg)
    finish()


def finish() -> None:
    """Leave together: a rank exiting while gloo threads still talk to it aborts the process."""
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown, where gloo's threads can abort the process


def dead_rank_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    init(rank, world, init_file, timeout_s=10.0)
    net = model()
    opt = MLBFGS(net.parameters(), lr=0.1, process_group=dist.group.WORLD)
    if rank == 1:
        os._exit(0)  # dies without a word
    averaged_grads(net, 0, 0, 1)
    try:
        opt.step()
        msg = "no error"
    except RuntimeError as err:
        msg = str(err)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(msg)
    os._exit(0)


def dcp_worker(rank: int, world: int, init_file: str, out_dir: str, optimizer: str) -> None:
    """Train 6 steps, save with torch.distributed.checkpoint (the state-dict helpers), train 6 more;
    a fresh model and optimizer load the checkpoint and train the same 6: both end equal."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    init(rank, world, init_file)

    def build():
        net = model()
        if optimizer == "mlbfgs":
            opt = MLBFGS(net.parameters(), process_group=dist.group.WORLD, **OPT_KW)
        else:
            opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        return net, opt

    def train(net, opt, start: int, steps: int) -> None:
        for step in range(start, start + steps):
            averaged_grads(net, step, rank, world)
            opt.step()

    net, opt = build()
    train(net, opt, 0, 6)
    ckpt = os.path.join(out_dir, "ckpt")
    dcp.save({"model": net.state_dict(), "optim": get_optimizer_state_dict(net, opt)}, checkpoint_id=ckpt)
    train(net, opt, 6, 6)
    fresh, fopt = build()
    state = {"model": fresh.state_dict(), "optim": get_optimizer_state_dict(fresh, fopt)}
    dcp.load(state, checkpoint_id=ckpt)
    fresh.load_state_dict(state["model"])
    set_optimizer_state_dict(fresh, fopt, state["optim"])
    train(fresh, fopt, 6, 6)
    diff = max(float((a - b).abs().max()) for a, b in zip(net.parameters(), fresh.parameters()))
    owned = getattr(opt, "owned_blocks", None)
    torch.save({"diff": diff, "owned": owned}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()
