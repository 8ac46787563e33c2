"""Rows of replicated parameters over the ranks of a data-parallel job (``MLBFGS(process_group=pg,
shard="rows")``): the mathematics of :mod:`mlbfgs.distribution.fsdp_rows` on views of the full
parameters, then one all-gather of the rows' directions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from ..layout import FlatLayout
from .collectives import all_gather_flat, check_same_blocks
from .communication import CommunicationBytes
from .fsdp_rows import FullyShardedRows, refuse_dtensors


class DataParallelRows(FullyShardedRows):
    """Rows of replicated parameters (DDP) over the ranks of ``group`` (``MLBFGS(shard="rows")``).

    Every rank holds the full parameters and the same averaged gradient. Rank ``r`` takes the rows of
    every parameter that ``Shard(0)`` would give it (``torch.chunk`` of dim 0; a 0-dim parameter is one
    row), as views of the parameter, its gradient and its momentum buffer, and runs the row-sharded math
    on them (:mod:`mlbfgs.curvature.rows`). :meth:`all_gather` then gives every rank the direction of every
    rank's rows, in a ``world_size x R`` buffer (``R``: the most elements any rank holds rows of), and
    every rank applies the same momentum update to all the rows of its full parameters
    (``updates_all_rows``), so the replicas stay identical. The state's DTensor views live on a 1-D mesh
    of ``group``, so ``torch.distributed.checkpoint`` handles them as it does ``fully_shard``'s.

    Args:
        group: the process group of the data-parallel job.
        device_type: the parameters' device type (``"cpu"``, ``"cuda"``): that of the mesh.
        comm_dtype: dtype of the direction exchange (None: the working dtype). Every rank then uses the
            rounded direction, its own rows included.

    Raises:
        ValueError: ``torch.distributed`` is not initialised.
    """

    updates_all_rows = True

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

    def check_new_params(self, params: Sequence[torch.Tensor], offset: int) -> None:
        refuse_dtensors(params, offset)  # replicated DDP parameters are plain tensors

    def communication_bytes(self, blocks: Sequence[Sequence[torch.Tensor]], layout: FlatLayout, history_size: int,
                            work_dtype: torch.dtype) -> CommunicationBytes:
        """The all-reduces of :class:`RowSharding`, and the all-gather of ``world_size * R`` elements of
        ``comm_dtype`` (default the working dtype), ``R`` the most elements any rank holds rows of
        (:mod:`mlbfgs.distribution.communication`); 0 on one rank."""
        reduced = super().communication_bytes(blocks, layout, history_size, work_dtype)
        if self.world_size == 1:
            return reduced
        element = torch.empty((), dtype=self.comm_dtype or work_dtype).element_size()
        segment = max(sum(s) for s in self._sizes(blocks))
        return reduced._replace(all_gather=self.world_size * segment * element)

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        """Raise on every rank (no hang) if the ranks disagree on the blocks or the shard mode."""
        check_same_blocks(self.group, block_sizes, self.mesh.device_type, "rows")
