"""Rows under FSDP2: every rank holds its rows (its ``fully_shard`` shards) of every block.

Each parameter's rows (dim 0) are split over the ranks in ``torch.chunk`` sizes, as DTensor's
``Shard(0)`` splits them: a rank holds a contiguous range of rows of every parameter (possibly none).
MLBFGS then keeps, per block, the same rows of the averages, anchors and curvature ring, and
everything else (the ``2m x 2m`` Gram and compact matrices, gamma, counters) replicated on every
rank. The inner products the method needs are sums over rows, so each rank adds its partial sums
and one all-reduce per step (two on pair-forming steps) completes them (:mod:`mlbfgs.curvature.rows`).
Two sources of rows:

- :class:`FullyShardedRows`, FSDP2: ``torch.distributed.fsdp.fully_shard`` parameters are DTensors
  sharded on dim 0 over a 1-D device mesh; a rank's rows are its local shards. No direction is
  exchanged: each rank updates its own shards.
- :class:`mlbfgs.distribution.ddp_rows.DataParallelRows`, DDP (``MLBFGS(process_group=pg, shard="rows")``): every rank
  holds the full parameters and the same averaged gradient; a rank's rows are views of them. After
  the direction, one all-gather of the rows' directions gives every rank the full direction, and
  every rank applies the same momentum update to its full parameters.

Either way the state is the same: per parameter, DTensor views (``Shard(0)`` on a 1-D mesh) of the
rank's rows, so ``torch.distributed.checkpoint`` saves them and reshards them to another world size.

This module holds the collectives and the tensor plumbing; the math calls :meth:`FullyShardedRows.all_reduce_`
and never ``torch.distributed`` itself.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from ..layout import FlatLayout
from .communication import NO_COMMUNICATION, CommunicationBytes
from .protocol import own_views


def is_dtensor(t: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (or a Parameter wrapping one)."""
    return type(t).__name__ == "DTensor" or type(getattr(t, "data", None)).__name__ == "DTensor"


def refuse_dtensors(params: Sequence[torch.Tensor], offset: int) -> None:
    """ValueError naming parameter ``offset + i`` when a new parameter is a DTensor (plain parameters only)."""
    for i, p in enumerate(params):
        if is_dtensor(p):
            raise ValueError(
                f"param_group: parameter {offset + i} does not match the others: with fully_shard every "
                "parameter must be a DTensor on the same mesh, and without it none"
            )


def row_sharding_problem(p: Any) -> str | None:
    """Why the DTensor ``p`` cannot be row-sharded (a phrase), or None when it is a ``fully_shard``
    parameter: a 1-D device mesh and placement ``Shard(0)``."""
    from torch.distributed.tensor import Shard

    mesh, placements = p.device_mesh, tuple(p.placements)
    if mesh.ndim != 1:
        return (f"lives on a {mesh.ndim}-D device mesh (placements {placements}); only a 1-D mesh "
                "(plain fully_shard, not HSDP or tensor parallel) is supported")
    if len(placements) != 1 or type(placements[0]) is not Shard or placements[0].dim != 0:
        return (f"has placements {placements}; only Shard(0) (what fully_shard gives) is supported, "
                "not tensor-parallel shards or replicated DTensors")
    return None


class FullyShardedRows:
    """The ranks of a 1-D device mesh, each holding the ``Shard(0)`` rows of every parameter.

    ``rank`` and ``world_size`` are those of the mesh. Every rank holds every block (there is no
    block assignment), so ``owns_all_blocks`` is True and :meth:`all_gather` does nothing; each rank
    updates its own rows of the parameters only (``replicated_params`` False).
    """

    holds_rows = True
    updates_all_rows = False

    def __init__(self, mesh: Any) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("params: DTensor parameters need torch.distributed initialised (init_process_group)")
        self.mesh = mesh
        self.group = mesh.get_group()
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)

    # ------------------------------------------------------------------ tensors
    def local(self, t: torch.Tensor) -> torch.Tensor:
        """The rank's shard of a DTensor (a plain tensor sharing its storage)."""
        return t.to_local()  # type: ignore[attr-defined, no-any-return]

    def rows_of(self, t: torch.Tensor, rank: int) -> torch.Tensor:
        """Rank ``rank``'s rows of the parameter-shaped ``t``; here only this rank's own (its local shard)."""
        if rank != self.rank:
            raise ValueError(f"rank: under fully_shard rank {self.rank} holds its own rows only, not rank {rank}'s")
        return self.local(t)

    def update_views(self, blocks: Sequence[Sequence[torch.Tensor]],
                     views: dict[int, torch.Tensor]) -> dict[int, list[tuple[int, torch.Tensor]]]:
        """Per parameter (by ``id``): ``(rank, direction)`` of the rows this rank updates once
        :meth:`all_gather` has run. Here its own rows, whose direction is ``views`` (the step's flat
        buffer shaped like the local shards)."""
        return own_views(self.rank, views)

    def shard_like(self, local: torch.Tensor, param: torch.Tensor, leading: int = 0) -> torch.Tensor:
        """A DTensor view of ``local`` (the rank's rows of a tensor shaped ``(leading, *param.shape)``
        or ``param.shape`` when ``leading`` is 0), sharded like ``param``: on dim 0, or on dim 1 after
        the leading dimension. Shares ``local``'s memory, so ``torch.distributed.checkpoint`` saves
        and loads (resharding) straight into the optimizer's working buffers; the local tensor starts
        its own storage (:func:`_at_storage_start`), so ``torch.save`` can pickle the DTensor."""
        from torch.distributed.tensor import DTensor, Shard

        rows_shape = tuple(param.shape) or (1,)  # a 0-dim parameter is one row
        shape = rows_shape if leading == 0 else (leading, *rows_shape)
        stride = _contiguous_stride(shape)
        placement = Shard(0) if leading == 0 else Shard(1)
        return DTensor.from_local(_at_storage_start(local), self.mesh, [placement], run_check=False,
                                  shape=torch.Size(shape), stride=stride)

    def rows_per_rank(self, param: torch.Tensor) -> list[int]:
        """Elements of ``param`` on each rank (``torch.chunk`` of dim 0, as DTensor's ``Shard(0)``)."""
        rows = param.shape[0] if param.dim() else 1
        row_numel = param.numel() // rows if rows else 0
        chunk = math.ceil(rows / self.world_size) if rows else 0
        return [max(0, min(chunk, rows - r * chunk)) * row_numel for r in range(self.world_size)]

    def assign(self, new_sizes: Sequence[int], sizes: Sequence[int] = (), owners: Sequence[int] = ()) -> list[int]:
        """Every rank holds its rows of every block."""
        return [self.rank] * len(new_sizes)

    def layout(self, blocks: Sequence[Sequence[torch.Tensor]], owners: Sequence[int]) -> tuple[FlatLayout, float]:
        """The flat buffer holds this rank's rows of every block; the imbalance is that of the rows."""
        local = [sum(self.local(p).numel() for p in b) for b in blocks]
        per_rank = [sum(n) for n in zip(*(self.rows_per_rank(p) for b in blocks for p in b))]
        mean = sum(per_rank) / len(per_rank)
        return FlatLayout.build(local, [0] * len(local), 1), (max(per_rank) / mean if mean else 1.0)

    def check_new_params(self, params: Sequence[torch.Tensor], offset: int) -> None:
        same_mesh = [is_dtensor(p) and p.device_mesh == self.mesh for p in params]  # type: ignore[attr-defined]
        if not all(same_mesh):
            raise ValueError(
                f"param_group: parameter {offset + same_mesh.index(False)} does not match the others: with "
                "fully_shard every parameter must be a DTensor on the same mesh, and without it none"
            )

    # ------------------------------------------------------------------ collectives
    def all_reduce_(self, buf: torch.Tensor) -> None:
        """Sum ``buf`` over the ranks, in place (the only collective of a step)."""
        if self.world_size == 1:
            return
        try:
            dist.all_reduce(buf, group=self.group)
        except RuntimeError as err:
            raise RuntimeError(
                f"mlbfgs: summing the row-sharded partial products failed on rank {self.rank} of "
                f"{self.world_size} (a rank died, timed out or called step() a different number of times)"
            ) from err

    def all_gather(self, flat: torch.Tensor, layout: Any) -> None:
        """Nothing to exchange: each rank updates its own shards."""
        return None

    def communication_bytes(self, blocks: Sequence[Sequence[torch.Tensor]], layout: FlatLayout, history_size: int,
                            work_dtype: torch.dtype) -> CommunicationBytes:
        """The step's all-reduce, ``(B (2m + 1) + 1)`` elements of the working dtype for ``B`` blocks,
        and on a pair-forming step ``B (4m + 5)`` more (:mod:`mlbfgs.distribution.communication`); 0 on one rank."""
        if self.world_size == 1:
            return NO_COMMUNICATION
        element = torch.empty((), dtype=work_dtype).element_size()
        n, m = len(blocks), history_size
        return CommunicationBytes((n * (2 * m + 1) + 1) * element, n * (4 * m + 5) * element, 0)

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        """Raise on every rank (no hang) if the ranks disagree on the blocks (global sizes)."""
        if self.world_size == 1:
            return
        sig = torch.tensor(
            [len(block_sizes), sum(block_sizes), zlib.crc32(repr(list(block_sizes)).encode())],
            dtype=torch.float64,
        )
        sig = sig.to(self.mesh.device_type)
        low, high = sig.clone(), sig.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN, group=self.group)
        dist.all_reduce(high, op=dist.ReduceOp.MAX, group=self.group)
        if not torch.equal(low, high):
            raise ValueError(
                "params: ranks disagree on the parameter blocks (number of blocks, total elements, layout "
                f"checksum: between {low.tolist()} and {high.tolist()}); every rank must build MLBFGS with the "
                "same model and blocks"
            )


def _at_storage_start(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a view with storage offset 0 on a slice of its storage (the same memory, which the slice
    keeps alive). A DTensor takes its local tensor's storage offset, and ``torch.save`` fails on a DTensor
    whose offset is not 0 ("invalid python storage", torch 2.14), as every parameter's rows but a block's
    first have in the block's buffers."""
    if t.storage_offset() == 0:
        return t
    if t.numel() == 0:
        return torch.empty(t.shape, dtype=t.dtype, device=t.device)
    size = t.element_size()
    span = (sum((n - 1) * st for n, st in zip(t.shape, t.stride())) + 1) * size
    start = t.storage_offset() * size
    return t.new_empty(0).set_(t.untyped_storage()[start:start + span], 0, t.shape, t.stride())


def _contiguous_stride(shape: Sequence[int]) -> tuple[int, ...]:
    stride, acc = [], 1
    for n in reversed(shape):
        stride.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(stride))
