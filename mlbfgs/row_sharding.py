"""Row sharding under FSDP2: every rank holds its rows of every block (the layer the math does not know about).

With ``torch.distributed.fsdp.fully_shard`` each parameter is a DTensor sharded on dim 0 over a
1-D device mesh: a rank holds a contiguous range of its rows (``torch.chunk`` sizes, possibly none).
MLBFGS then keeps, per block, the same rows of the averages, anchors and curvature ring, and
everything else (the ``2m x 2m`` Gram and compact matrices, gamma, counters) replicated on every
rank. The inner products the method needs are sums over rows, so each rank adds its partial sums
and one all-reduce per step (two on pair-forming steps) completes them
(:mod:`mlbfgs.row_sharded`). No direction is exchanged: each rank updates its own shards.

This module holds the collectives and the DTensor plumbing; the math calls :meth:`RowSharding.all_reduce_`
and never ``torch.distributed`` itself.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist


def is_dtensor(t: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (or a Parameter wrapping one)."""
    return type(t).__name__ == "DTensor" or type(getattr(t, "data", None)).__name__ == "DTensor"


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


class RowSharding:
    """The ranks of a 1-D device mesh, each holding the ``Shard(0)`` rows of every parameter.

    ``rank`` and ``world_size`` are those of the mesh. Every rank holds every block (there is no
    block assignment), so ``owns_all_blocks`` is True and :meth:`all_gather` does nothing.
    """

    owns_all_blocks = True

    def __init__(self, mesh: Any) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("params: DTensor parameters need torch.distributed initialised (init_process_group)")
        self.mesh = mesh
        self.group = mesh.get_group()
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)

    # ------------------------------------------------------------------ tensors
    @staticmethod
    def local(t: torch.Tensor) -> torch.Tensor:
        """The rank's shard of a DTensor (a plain tensor sharing its storage)."""
        return t.to_local()  # type: ignore[attr-defined, no-any-return]

    def shard_like(self, local: torch.Tensor, param: torch.Tensor, leading: int = 0) -> torch.Tensor:
        """A DTensor view of ``local`` (the rank's rows of a tensor shaped ``(leading, *param.shape)``
        or ``param.shape`` when ``leading`` is 0), sharded like ``param``: on dim 0, or on dim 1 after
        the leading dimension. Shares ``local``'s storage, so ``torch.distributed.checkpoint`` saves
        and loads (resharding) straight into the optimizer's working buffers."""
        from torch.distributed.tensor import DTensor, Shard

        shape = tuple(param.shape) if leading == 0 else (leading, *param.shape)
        stride = _contiguous_stride(shape)
        placement = Shard(0) if leading == 0 else Shard(1)
        return DTensor.from_local(local, self.mesh, [placement], run_check=False, shape=torch.Size(shape),
                                  stride=stride)

    def rows_per_rank(self, param: torch.Tensor) -> list[int]:
        """Elements of ``param`` on each rank (``torch.chunk`` of dim 0, as DTensor's ``Shard(0)``)."""
        rows = param.shape[0] if param.dim() else 1
        row_numel = param.numel() // rows if rows else 0
        chunk = math.ceil(rows / self.world_size) if rows else 0
        return [max(0, min(chunk, rows - r * chunk)) * row_numel for r in range(self.world_size)]

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


def resolve_row_sharding(params: Sequence[torch.Tensor], process_group: Any, comm_dtype: Any,
                         history_dtype: torch.dtype | None) -> RowSharding | None:
    """A :class:`RowSharding` when ``params`` are ``fully_shard`` DTensors, None when none is a DTensor.

    Raises ``ValueError`` naming the parameter or the argument: a mix of DTensor and plain
    parameters, DTensors on different meshes, an explicit ``process_group`` or ``comm_dtype`` (the
    mesh gives the group and no direction is exchanged), or a reduced ``history_dtype`` (its rows are
    stored normalised by their norm, which no rank knows alone; not supported with row sharding).
    """
    kinds = [is_dtensor(p) for p in params]
    if not any(kinds):
        return None
    if not all(kinds):
        i, j = kinds.index(True), kinds.index(False)
        raise ValueError(
            f"params: parameter {i} is a DTensor but parameter {j} (shape {tuple(params[j].shape)}) is not; with "
            "fully_shard, shard every parameter the optimizer trains (fully_shard the root module too)"
        )
    meshes = [p.device_mesh for p in params]  # type: ignore[attr-defined]  # DTensors
    mesh = meshes[0]
    for i, other in enumerate(meshes):
        if other != mesh:
            raise ValueError(f"params: parameter {i} lives on another device mesh than parameter 0; use one mesh")
    if process_group is not None:
        raise ValueError("process_group: leave it None with DTensor (fully_shard) parameters; their mesh gives it")
    if comm_dtype is not None:
        raise ValueError("comm_dtype: with DTensor (fully_shard) parameters no direction is exchanged; leave it None")
    if history_dtype in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"history_dtype: {history_dtype} is not supported with DTensor (fully_shard) parameters (reduced rows "
            "are stored normalised by a norm no rank knows alone); use float32 or float64"
        )
    return RowSharding(mesh)


def _contiguous_stride(shape: Sequence[int]) -> tuple[int, ...]:
    stride, acc = [], 1
    for n in reversed(shape):
        stride.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(stride))
