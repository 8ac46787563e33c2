"""Row sharding: every rank holds its rows of every block (the layer the math does not know about).

Each parameter's rows (dim 0) are split over the ranks in ``torch.chunk`` sizes, as DTensor's
``Shard(0)`` splits them: a rank holds a contiguous range of rows of every parameter (possibly none).
MLBFGS then keeps, per block, the same rows of the averages, anchors and curvature ring, and
everything else (the ``2m x 2m`` Gram and compact matrices, gamma, counters) replicated on every
rank. The inner products the method needs are sums over rows, so each rank adds its partial sums
and one all-reduce per step (two on pair-forming steps) completes them (:mod:`mlbfgs.row_sharded`).
Two sources of rows:

- :class:`RowSharding`, FSDP2: ``torch.distributed.fsdp.fully_shard`` parameters are DTensors
  sharded on dim 0 over a 1-D device mesh; a rank's rows are its local shards. No direction is
  exchanged: each rank updates its own shards.
- :class:`DataParallelRowSharding`, DDP (``MLBFGS(process_group=pg, shard="rows")``): every rank
  holds the full parameters and the same averaged gradient; a rank's rows are views of them. After
  the direction, one all-gather of the rows' directions gives every rank the full direction, and
  every rank applies the same momentum update to its full parameters.

Either way the state is the same: per parameter, DTensor views (``Shard(0)`` on a 1-D mesh) of the
rank's rows, so ``torch.distributed.checkpoint`` saves them and reshards them to another world size.

This module holds the collectives and the tensor plumbing; the math calls :meth:`RowSharding.all_reduce_`
and never ``torch.distributed`` itself.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from .communication import NO_COMMUNICATION, CommunicationBytes
from .distributed import SHARD_MODES, all_gather_flat, check_same_blocks
from .layout import FlatLayout


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
    block assignment), so ``owns_all_blocks`` is True and :meth:`all_gather` does nothing; each rank
    updates its own rows of the parameters only (``replicated_params`` False).
    """

    owns_all_blocks = True
    replicated_params = False

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
        return {pid: [(self.rank, v)] for pid, v in views.items()}

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
        and on a pair-forming step ``B (4m + 5)`` more (:mod:`mlbfgs.communication`); 0 on one rank."""
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


class DataParallelRowSharding(RowSharding):
    """Rows of replicated parameters (DDP) over the ranks of ``group`` (``MLBFGS(shard="rows")``).

    Every rank holds the full parameters and the same averaged gradient. Rank ``r`` takes the rows of
    every parameter that ``Shard(0)`` would give it (``torch.chunk`` of dim 0; a 0-dim parameter is one
    row), as views of the parameter, its gradient and its momentum buffer, and runs the row-sharded math
    on them (:mod:`mlbfgs.row_sharded`). :meth:`all_gather` then gives every rank the direction of every
    rank's rows, in a ``world_size x R`` buffer (``R``: the most elements any rank holds rows of), and
    every rank applies the same momentum update to all the rows of its full parameters
    (``replicated_params``), so the replicas stay identical. The state's DTensor views live on a 1-D mesh
    of ``group``, so ``torch.distributed.checkpoint`` handles them as it does ``fully_shard``'s.

    Args:
        group: the process group of the data-parallel job.
        device_type: the parameters' device type (``"cpu"``, ``"cuda"``): that of the mesh.
        comm_dtype: dtype of the direction exchange (None: the working dtype). Every rank then uses the
            rounded direction, its own rows included.

    Raises:
        ValueError: ``torch.distributed`` is not initialised.
    """

    replicated_params = True

    def __init__(self, group: Any, device_type: str, comm_dtype: torch.dtype | None = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("process_group: torch.distributed is not initialised; call init_process_group first")
        from torch.distributed.device_mesh import DeviceMesh

        super().__init__(DeviceMesh.from_group(group, device_type))
        self.comm_dtype = comm_dtype
        self._gathered: torch.Tensor | None = None  # world_size x segment directions, the working dtype
        self._comm: torch.Tensor | None = None  # the same in comm_dtype, when it differs
        self._segment = 0
        self._own = 0  # elements of this rank's rows

    def local(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's rows of the parameter-shaped ``t`` (a view)."""
        return self.rows_of(t, self.rank)

    def rows_of(self, t: torch.Tensor, rank: int) -> torch.Tensor:
        """Rank ``rank``'s rows of the parameter-shaped ``t``: a view of ``torch.chunk`` rows of dim 0
        (possibly empty; shape ``(1,)`` or ``(0,)`` for a 0-dim ``t``)."""
        rows = t.unsqueeze(0) if t.dim() == 0 else t
        n = rows.shape[0]
        chunk = -(-n // self.world_size)
        start = min(rank * chunk, n)
        return rows.narrow(0, start, max(0, min(chunk, n - start)))

    def _sizes(self, blocks: Sequence[Sequence[torch.Tensor]]) -> list[list[int]]:
        """Per rank, the elements of its rows of every parameter (blocks in order)."""
        params = [p for b in blocks for p in b]
        return [[self.rows_of(p, k).numel() for p in params] for k in range(self.world_size)]

    def update_views(self, blocks: Sequence[Sequence[torch.Tensor]],
                     views: dict[int, torch.Tensor]) -> dict[int, list[tuple[int, torch.Tensor]]]:
        """Allocate the gathered buffer (dtype and device of ``views``) and return, per parameter (by
        ``id``), ``(rank, direction)`` for every rank holding rows of it: views of that rank's segment,
        where :meth:`all_gather` puts its direction (its rows of every block, in the order of the flat
        buffer)."""
        some = next(iter(views.values()))
        sizes = self._sizes(blocks)
        self._own = sum(sizes[self.rank])
        self._segment = max(sum(s) for s in sizes)
        self._gathered = torch.zeros(self.world_size * self._segment, dtype=some.dtype, device=some.device)
        self._comm = None
        if self.comm_dtype is not None and self.comm_dtype != some.dtype:
            self._comm = torch.zeros(self._gathered.numel(), dtype=self.comm_dtype, device=some.device)
        params = [p for b in blocks for p in b]
        out: dict[int, list[tuple[int, torch.Tensor]]] = {id(p): [] for p in params}
        for k in range(self.world_size):
            offset = k * self._segment
            for p, n in zip(params, sizes[k]):
                if n:
                    shape = self.rows_of(p, k).shape
                    out[id(p)].append((k, self._gathered.narrow(0, offset, n).view(shape)))
                offset += n
        return out

    def all_gather(self, flat: torch.Tensor, layout: Any) -> None:
        """Every rank's rows of the direction into the gathered buffer (one all-gather; in ``comm_dtype``
        when given, then cast back). ``flat`` starts with this rank's rows of every block."""
        if self._gathered is None:
            raise RuntimeError("mlbfgs: update_views must run before all_gather (it allocates the buffer)")
        target = self._comm if self._comm is not None else self._gathered
        own = target.narrow(0, self.rank * self._segment, self._segment)
        own.narrow(0, 0, self._own).copy_(flat.narrow(0, 0, self._own))
        if self.world_size > 1:
            try:
                all_gather_flat(target, own, self.group)
            except RuntimeError as err:
                raise RuntimeError(
                    f"mlbfgs: exchanging the row directions failed on rank {self.rank} of {self.world_size} "
                    "(a rank died, timed out or called step() a different number of times)"
                ) from err
        if self._comm is not None:
            self._gathered.copy_(self._comm)

    def communication_bytes(self, blocks: Sequence[Sequence[torch.Tensor]], layout: FlatLayout, history_size: int,
                            work_dtype: torch.dtype) -> CommunicationBytes:
        """The all-reduces of :class:`RowSharding`, and the all-gather of ``world_size * R`` elements of
        ``comm_dtype`` (default the working dtype), ``R`` the most elements any rank holds rows of
        (:mod:`mlbfgs.communication`); 0 on one rank."""
        reduced = super().communication_bytes(blocks, layout, history_size, work_dtype)
        if self.world_size == 1:
            return reduced
        element = torch.empty((), dtype=self.comm_dtype or work_dtype).element_size()
        segment = max(sum(s) for s in self._sizes(blocks))
        return reduced._replace(all_gather=self.world_size * segment * element)

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        """Raise on every rank (no hang) if the ranks disagree on the blocks or the shard mode."""
        check_same_blocks(self.group, block_sizes, self.mesh.device_type, "rows")


def resolve_row_sharding(params: Sequence[torch.Tensor], process_group: Any, comm_dtype: Any,
                         history_dtype: torch.dtype | None, shard: str = "blocks") -> RowSharding | None:
    """The row sharding of ``params``: a :class:`RowSharding` when they are ``fully_shard`` DTensors
    (``shard`` is then not read), a :class:`DataParallelRowSharding` for plain parameters with a
    ``process_group`` and ``shard="rows"``, else None (a single process, or whole blocks per rank).

    Raises ``ValueError`` naming the parameter or the argument: ``shard`` not in :data:`SHARD_MODES`;
    a mix of DTensor and plain parameters, DTensors on different meshes, an explicit ``process_group``
    or ``comm_dtype`` with DTensors (the mesh gives the group and no direction is exchanged); a reduced
    ``history_dtype`` with row sharding (its rows are stored normalised by their norm, which no rank
    knows alone).
    """
    if shard not in SHARD_MODES:
        raise ValueError(f"shard: expected one of {SHARD_MODES}, got {shard!r}")
    kinds = [is_dtensor(p) for p in params]
    if not any(kinds):
        if shard != "rows" or process_group is None:
            return None
        _refuse_reduced_history(history_dtype, "with shard='rows'")
        return DataParallelRowSharding(process_group, params[0].device.type, comm_dtype)
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
    _refuse_reduced_history(history_dtype, "with DTensor (fully_shard) parameters")
    return RowSharding(mesh)


def _refuse_reduced_history(history_dtype: torch.dtype | None, where: str) -> None:
    if history_dtype in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"history_dtype: {history_dtype} is not supported {where} (reduced rows are stored normalised by a "
            "norm no rank knows alone); use float32 or float64"
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
