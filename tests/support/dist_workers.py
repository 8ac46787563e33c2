"""Worker functions for the distributed tests (importable by spawned processes)."""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
from collections.abc import Callable, Iterator

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


def _record_construction_error(rank: int, out_dir: str, build: Callable[[], object]) -> None:
    """Write the ValueError that ``build()`` raises on this rank (or "no error") to ``rank<r>.txt``."""
    try:
        build()
        msg = "no error"
    except ValueError as err:
        msg = str(err)
    with open(os.path.join(out_dir, f"rank{rank}.txt"), "w") as f:
        f.write(msg)


def mismatch_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    init(rank, world, init_file)
    net = model()
    _record_construction_error(rank, out_dir, lambda: MLBFGS(
        net.parameters(), lr=0.1, blocks="model" if rank == 0 else "layer", process_group=dist.group.WORLD))
    finish()


def zero_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """MLBFGS built by ZeroRedundancyOptimizer on every rank: the error each rank gets."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    init(rank, world, init_file)
    _record_construction_error(rank, out_dir, lambda: ZeroRedundancyOptimizer(
        model().parameters(), optimizer_class=MLBFGS, lr=0.1, history_size=4))
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


# ---------------------------------------------------------------- DDP with shard="rows"
# The models, batches, configurations and the single-process reference are those of the fully_shard
# tests (tests.support.fsdp_workers, imported inside the functions: it imports this module). Every rank takes
# the whole global batch, so it holds what DDP gives it: the same averaged gradient as every other rank,
# bit for bit the single process's.


@contextlib.contextmanager
def recording_collectives() -> Iterator[list[tuple[str, int]]]:
    """Record ``(name, bytes)`` for every torch.distributed collective called inside the block: the
    bytes of its first tensor argument (an all-reduce's buffer, an all-gather's output)."""
    from tests.support.fsdp_workers import COLLECTIVES

    calls: list[tuple[str, int]] = []
    saved = {n: getattr(dist, n) for n in COLLECTIVES if hasattr(dist, n)}

    def wrap(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def recorded(*args, **kwargs):
            t = args[0] if args and isinstance(args[0], torch.Tensor) else None
            calls.append((name, t.numel() * t.element_size() if t is not None else 0))
            return fn(*args, **kwargs)
        return recorded

    for n, fn in saved.items():
        setattr(dist, n, wrap(n, fn))
    try:
        yield calls
    finally:
        for n, fn in saved.items():
            setattr(dist, n, fn)


def rows_optimizer(net: torch.nn.Module, blocks: str, norm: str, group, **kw) -> MLBFGS:
    from tests.support.fsdp_workers import OPT_KW

    return MLBFGS(net.parameters(), blocks=blocks, direction_norm=norm, process_group=group, shard="rows",
                  **{**OPT_KW, **kw})


def rows_backward(net: torch.nn.Module, name: str, step: int) -> None:
    """The gradient of the whole global batch of ``step`` (what every DDP rank holds after averaging)."""
    from tests.support.fsdp_workers import local_backward

    local_backward(net, name, step, 0, 1)


def ddp_rows_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """On 4 processes: every configuration of ``tests.support.fsdp_workers.CONFIGS`` with ``shard="rows"`` on
    the 4 ranks, and on two 2-rank groups (ranks 0-1 and 2-3, half of the configurations each). Then the
    bytes of the whole-block and fully_shard collectives, ``comm_dtype``, mismatched shard modes, and
    checkpoints. Saves one dict per rank."""
    from tests.support.fsdp_workers import CONFIGS

    assert world == 4
    init(rank, world, init_file, timeout_s=120.0)
    halves = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    alone = dist.new_group([0])
    half = halves[rank // 2]
    out: dict = {4: train_rows(dist.group.WORLD, CONFIGS), 2: train_rows(half, CONFIGS[rank // 2::2])}
    out["blocks_bytes"] = whole_block_bytes()
    out["fsdp_bytes"] = fully_shard_bytes()
    out["bf16"] = comm_dtype_run()
    out["mismatch"] = mismatch_message(rank)
    out["groups"] = groups_added_later(half)
    out["scalar"] = scalar_parameter_run(dist.group.WORLD)
    out["ckpt"] = rows_checkpoint_check(half, alone if rank == 0 else None, os.path.join(out_dir, "ckpt"))
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finish()


def train_rows(group, configs: list[tuple[str, str, str]]) -> dict:
    """``STEPS`` steps of each configuration with ``shard="rows"`` over ``group``: the parameters, the
    curvature bytes, the collectives of each step (and whether it formed a pair), the counters and
    ``communication_bytes()``."""
    from tests.support.fsdp_workers import STEPS, model

    out: dict = {}
    for name, blocks, norm in configs:
        net = model(name)
        opt = rows_optimizer(net, blocks, norm, group)
        steps = []
        for step in range(STEPS):
            rows_backward(net, name, step)
            with recording_collectives() as calls:
                opt.step()
            steps.append((calls, bool(opt.last_pairs)))
        out[(name, blocks, norm)] = {
            "params": [p.detach().clone() for p in net.parameters()],
            "bytes": opt.curvature_bytes(),
            "steps": steps,
            "stats": opt.stats,
            "comm": tuple(opt.communication_bytes()),
            "imbalance": opt.imbalance,
        }
    return out


def whole_block_bytes() -> dict:
    """``shard="blocks"`` on the 4 ranks, 4 steps of the CNN by layer: the recorded collectives and
    ``communication_bytes()``."""
    from tests.support.fsdp_workers import OPT_KW, model

    net = model("cnn")
    opt = MLBFGS(net.parameters(), blocks="layer", process_group=dist.group.WORLD, **OPT_KW)
    steps = []
    for step in range(4):
        rows_backward(net, "cnn", step)
        with recording_collectives() as calls:
            opt.step()
        steps.append(calls)
    return {"steps": steps, "comm": tuple(opt.communication_bytes())}


def fully_shard_bytes() -> dict:
    """``fully_shard`` on the 4 ranks, 5 steps (a pair forms at t = 4): the collectives of each step
    and ``communication_bytes()``."""
    from torch.distributed.device_mesh import init_device_mesh

    from tests.support.fsdp_workers import OPT_KW, local_backward, sharded_model

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    net = sharded_model("mlp", mesh)
    opt = MLBFGS(net.parameters(), blocks="layer", **OPT_KW)
    steps = []
    for step in range(5):
        local_backward(net, "mlp", step, mesh.get_local_rank(), mesh.size())
        with recording_collectives() as calls:
            opt.step()
        steps.append((calls, bool(opt.last_pairs)))
    return {"steps": steps, "comm": tuple(opt.communication_bytes())}


#: the configuration of the comm_dtype and checkpoint checks, and the steps before and after the checkpoint
ROWS_CONFIG, ROWS_SAVE_AT, ROWS_AFTER = ("cnn", "layer", "global"), 8, 6


def comm_dtype_run() -> dict:
    """``shard="rows"`` with ``comm_dtype=torch.bfloat16`` on the 4 ranks: the parameters after 10 steps."""
    from tests.support.fsdp_workers import model

    name, blocks, norm = ROWS_CONFIG
    net = model(name)
    opt = rows_optimizer(net, blocks, norm, dist.group.WORLD, comm_dtype=torch.bfloat16)
    for step in range(10):
        rows_backward(net, name, step)
        opt.step()
    return {"params": [p.detach().clone() for p in net.parameters()], "comm": tuple(opt.communication_bytes())}


def groups_added_later(group, reference: bool = False) -> dict:
    """The MLP's first layer trained with ``shard="rows"`` over ``group``, the rest added as a group at
    step 5 (e.g. unfreezing); 12 steps. With ``reference`` the same in one process, without sharding."""
    from tests.support.fsdp_workers import OPT_KW, model

    net = model("mlp")
    ps = list(net.parameters())
    kw = {} if reference else {"process_group": group, "shard": "rows"}
    opt = MLBFGS(ps[:2], blocks="layer", **kw, **OPT_KW)
    for step in range(12):
        if step == 5:
            opt.add_param_group({"params": ps[2:]})
        rows_backward(net, "mlp", step)
        opt.step()
    return {"params": [p.detach().clone() for p in ps], "stats": opt.stats, "blocks": len(opt.blocks)}


def scalar_parameter_run(group, reference: bool = False) -> dict:
    """A linear layer and a 0-dim temperature (one row: rank 0 holds it, the others none), 10 steps with
    ``shard="rows"`` over ``group`` (with ``reference``: one process, without sharding)."""
    from tests.support.fsdp_workers import OPT_KW, batch

    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 3).double()
    temperature = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
    params = [*linear.parameters(), temperature]
    kw = {} if reference else {"process_group": group, "shard": "rows"}
    opt = MLBFGS(params, **kw, **OPT_KW)
    for step in range(10):
        x, y = batch("mlp", step)
        for p in params:
            p.grad = None
        torch.nn.functional.cross_entropy(linear(x) * temperature, y).backward()
        opt.step()
    return {"params": [p.detach().clone() for p in params], "bytes": opt.curvature_bytes()}


def mismatch_message(rank: int) -> str:
    """Rank 0 asks for rows, the others for blocks: the error every rank raises at construction."""
    from tests.support.fsdp_workers import model

    try:
        MLBFGS(model("mlp").parameters(), lr=0.1, process_group=dist.group.WORLD,
               shard="rows" if rank == 0 else "blocks")
    except ValueError as err:
        return str(err)
    return "no error"


def rows_checkpoint_check(half, one, path: str) -> dict:
    """Ranks 0-1 train ``ROWS_SAVE_AT`` steps with ``shard="rows"`` over 2 ranks, save with
    torch.distributed.checkpoint (the state-dict helpers) and as one ``torch.save`` of ``state_dict()``
    per rank, and train ``ROWS_AFTER`` more ("straight"). A fresh 2-rank model and optimizer resume from
    either (bit-exact expected); all 4 ranks, and rank 0 alone (a 1-rank group), resume from the
    distributed checkpoint, resharded. Returns the parameters at the end of each."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    from tests.support.fsdp_workers import model

    name, blocks, norm = ROWS_CONFIG
    rank = dist.get_rank()
    plain_file = f"{path}-rank{rank}.pt"

    def build(group):
        net = model(name)
        return net, rows_optimizer(net, blocks, norm, group)

    def train(net, opt, start: int, steps: int) -> list[torch.Tensor]:
        for step in range(start, start + steps):
            rows_backward(net, name, step)
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    def from_dcp(group) -> list[torch.Tensor]:
        net, opt = build(group)
        state = {"model": net.state_dict(), "optim": get_optimizer_state_dict(net, opt)}
        dcp.load(state, checkpoint_id=path, process_group=group)
        net.load_state_dict(state["model"])
        set_optimizer_state_dict(net, opt, state["optim"])
        return train(net, opt, ROWS_SAVE_AT, ROWS_AFTER)

    out: dict = {}
    if rank < 2:
        net, opt = build(half)
        train(net, opt, 0, ROWS_SAVE_AT)
        dcp.save({"model": net.state_dict(), "optim": get_optimizer_state_dict(net, opt)}, checkpoint_id=path,
                 process_group=half)
        torch.save({"model": net.state_dict(), "optim": opt.state_dict()}, plain_file)
        out["straight"] = train(net, opt, ROWS_SAVE_AT, ROWS_AFTER)
        out["dcp 2->2"] = from_dcp(half)
        fresh, fopt = build(half)
        saved = torch.load(plain_file)
        fresh.load_state_dict(saved["model"])
        fopt.load_state_dict(saved["optim"])
        out["state_dict 2->2"] = train(fresh, fopt, ROWS_SAVE_AT, ROWS_AFTER)
    dist.barrier()
    out["dcp 2->4"] = from_dcp(dist.group.WORLD)
    if one is not None:
        out["dcp 2->1"] = from_dcp(one)
    dist.barrier()
    return out
