"""What MLBFGS asks of a distribution strategy (one implementation per file in this package).

The optimizer never calls ``torch.distributed`` itself: it asks its :class:`Distributor` which blocks
this rank holds, which part of each parameter it works on, and to run the step's collectives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from ..layout import FlatLayout
from .communication import CommunicationBytes

#: MLBFGS(process_group=pg, shard=...): whole blocks per rank or every block's rows per rank
SHARD_MODES = ("blocks", "rows")


class Distributor(Protocol):
    """Where a block's curvature lives and how the ranks exchange what the step needs.

    Attributes:
        rank, world_size: this rank and the number of ranks (0 and 1 in a single process).
        holds_rows: False: each rank holds whole blocks (the curvature of
            :class:`mlbfgs.curvature.WholeBlockCurvature`); True: each rank holds its rows of every
            block (:class:`mlbfgs.curvature.RowCurvature`).
        updates_all_rows: True when every rank updates every rank's rows of its (replicated)
            parameters from a gathered direction (DDP with ``shard="rows"``).
    """

    rank: int
    world_size: int
    holds_rows: bool
    updates_all_rows: bool

    def local(self, t: torch.Tensor) -> torch.Tensor:
        """The part of the parameter-shaped ``t`` this rank works on (``t`` itself for whole blocks)."""
        ...

    def assign(self, new_sizes: Sequence[int], sizes: Sequence[int] = (), owners: Sequence[int] = ()) -> list[int]:
        """The ranks holding new blocks of ``new_sizes``, given the existing blocks' ``sizes`` and ``owners``."""
        ...

    def layout(self, blocks: Sequence[Sequence[torch.Tensor]], owners: Sequence[int]) -> tuple[FlatLayout, float]:
        """The step's flat buffer for this rank, and the load imbalance (max / mean elements per rank)."""
        ...

    def check_new_params(self, params: Sequence[torch.Tensor], offset: int) -> None:
        """Raise ``ValueError`` (naming parameter ``offset + i``) if a new parameter does not fit."""
        ...

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        """Raise ``ValueError`` on every rank (no hang) if the ranks disagree on the blocks."""
        ...

    def all_reduce_(self, buf: torch.Tensor) -> None:
        """Sum ``buf`` over the ranks in place (row-sharded partial products)."""
        ...

    def all_gather(self, flat: torch.Tensor, layout: FlatLayout) -> None:
        """Give every rank the direction it updates with (nothing where each rank updates its own)."""
        ...

    def update_views(self, blocks: Sequence[Sequence[torch.Tensor]],
                     views: dict[int, torch.Tensor]) -> dict[int, list[tuple[int, torch.Tensor]]]:
        """Per parameter (by ``id``): ``(rank, direction)`` of the rows this rank updates after
        :meth:`all_gather`; ``views`` are the step's own direction views."""
        ...

    def communication_bytes(self, blocks: Sequence[Sequence[torch.Tensor]], layout: FlatLayout, history_size: int,
                            work_dtype: torch.dtype) -> CommunicationBytes:
        """Bytes per rank of a step's collectives (:mod:`mlbfgs.distribution.communication`)."""
        ...


def own_views(rank: int, views: dict[int, torch.Tensor]) -> dict[int, list[tuple[int, torch.Tensor]]]:
    """:meth:`Distributor.update_views` of a strategy where each rank updates what it computed."""
    return {pid: [(rank, v)] for pid, v in views.items()}

