"""Data-parallel K-FAC: average the factors over ranks, spread the eigendecompositions over them.

In data-parallel training every rank sees its own shard of the batch. With a mean loss per rank,
the factor of the global batch is the mean of the per-rank factors (A is a mean over rows; G is
(1/B_local) sum of per-example outer products), so the fresh factors are all-reduced (mean) on
factor-update steps, packed into one buffer (one collective).

Each eigendecomposition (one per factor, two per layer) is owned by one rank, chosen greedily
(longest processing time first: factors by decreasing cost n^3, each to the least-loaded rank).
The owner computes (d, Q) and broadcasts it packed as one (n+1) x n tensor [d; Q]; the others
receive. Gradients are assumed to be averaged already (DDP or an all-reduce in the closure).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from mlbfgs import assign_blocks


def assign_owners(costs: list[float], world_size: int) -> list[int]:
    """Greedy LPT assignment: owner rank of each job (ties to the lowest rank, deterministic).

    The same rule that shards mL-BFGS blocks (:func:`mlbfgs.assign_blocks`).
    """
    return assign_blocks(costs, world_size)


def resolve_group(process_group: Any) -> tuple[Any, int, int] | None:
    """(group, rank, world) when running distributed with world > 1, else None."""
    if not (dist.is_available() and dist.is_initialized()):
        if process_group is not None:
            raise ValueError("process_group given but torch.distributed is not initialized")
        return None
    world = dist.get_world_size(process_group)
    if world <= 1:
        return None
    return process_group, dist.get_rank(process_group), world


class FactorComm:
    """The collectives of distributed K-FAC over one process group."""

    def __init__(self, group: Any, rank: int, world_size: int) -> None:
        self.group = group
        self.rank = rank
        self.world_size = world_size

    def _global_rank(self, rank: int) -> int:
        if self.group is None:
            return rank
        return dist.get_global_rank(self.group, rank)

    def allreduce_mean(self, tensors: list[torch.Tensor]) -> None:
        """In place: every tensor becomes its mean over the ranks (one packed all-reduce)."""
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        flat.div_(self.world_size)
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset : offset + n].view_as(t))
            offset += n

    def broadcast_packed(self, packed: list[torch.Tensor], owners: list[int]) -> None:
        """Broadcast ``packed[j]`` from rank ``owners[j]`` to every rank (asynchronously, then wait)."""
        works = [
            dist.broadcast(buf, src=self._global_rank(owner), group=self.group, async_op=True)
            for buf, owner in zip(packed, owners, strict=True)
        ]
        for w in works:
            w.wait()
