"""A single process: every block here, nothing exchanged."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..blocks import assign_blocks, load_imbalance
from ..layout import FlatLayout
from .communication import NO_COMMUNICATION, CommunicationBytes
from .protocol import own_views


class WholeBlocks:
    """Shared behaviour of the strategies where each rank holds whole blocks (:class:`Local`,
    :class:`mlbfgs.distribution.ddp_blocks.DataParallelBlocks`): blocks balanced by size over the ranks,
    the full parameters on every rank, every rank's directions in one flat buffer."""

    holds_rows = False
    updates_all_rows = False
    rank: int
    world_size: int

    def local(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def assign(self, new_sizes: Sequence[int], sizes: Sequence[int] = (), owners: Sequence[int] = ()) -> list[int]:
        """Owners of new blocks: balanced by size at construction (:func:`mlbfgs.blocks.assign_blocks`), then
        the least-loaded rank for each block added later; existing owners stay."""
        if not owners:
            return assign_blocks(new_sizes, self.world_size)
        load = [0] * self.world_size
        for size, r in zip(sizes, owners):
            load[r] += size
        new = []
        for size in new_sizes:
            r = min(range(self.world_size), key=lambda k: (load[k], k))
            new.append(r)
            load[r] += size
        return new

    def layout(self, blocks: Sequence[Sequence[torch.Tensor]], owners: Sequence[int]) -> tuple[FlatLayout, float]:
        sizes = [sum(p.numel() for p in b) for b in blocks]
        return FlatLayout.build(sizes, owners, self.world_size), load_imbalance(sizes, owners, self.world_size)

    def check_new_params(self, params: Sequence[torch.Tensor], offset: int) -> None:
        from .fsdp_rows import refuse_dtensors

        refuse_dtensors(params, offset)

    def all_reduce_(self, buf: torch.Tensor) -> None:
        """Nothing to sum: each rank's products are whole."""
        return None

    def update_views(self, blocks: Sequence[Sequence[torch.Tensor]],
                     views: dict[int, torch.Tensor]) -> dict[int, list[tuple[int, torch.Tensor]]]:
        return own_views(self.rank, views)


class Local(WholeBlocks):
    """A single process: owns every block, exchanges nothing."""

    def __init__(self) -> None:
        self.rank, self.world_size = 0, 1

    def all_gather(self, flat: torch.Tensor, layout: FlatLayout) -> None:
        return None

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        return None

    def communication_bytes(self, blocks: Sequence[Sequence[torch.Tensor]], layout: FlatLayout, history_size: int,
                            work_dtype: torch.dtype) -> CommunicationBytes:
        """Nothing is exchanged (:mod:`mlbfgs.distribution.communication`)."""
        return NO_COMMUNICATION
