"""Flat layout of all parameters, grouped by the rank that owns their block.

The buffer holds one segment per rank; a segment is the concatenation of the blocks the rank
owns, zero padding up to the longest segment, and ``NUM_SLOTS`` scalar slots at its end (used to
exchange per-rank partial sums with the same collective as the directions). With equal segment
sizes one ``all_gather_into_tensor`` assembles the full direction on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

NUM_SLOTS = 1


@dataclass(frozen=True)
class FlatLayout:
    block_offsets: tuple[int, ...]  # start of each block in the flat buffer
    block_sizes: tuple[int, ...]
    owners: tuple[int, ...]
    world_size: int
    segment: int  # elements per rank, scalar slots included

    @classmethod
    def build(cls, block_sizes: Sequence[int], owners: Sequence[int], world_size: int) -> FlatLayout:
        used = [0] * world_size
        offsets = [0] * len(block_sizes)
        for b, (size, r) in enumerate(zip(block_sizes, owners)):
            offsets[b] = used[r]
            used[r] += size
        segment = max(used) + NUM_SLOTS
        offsets = [offsets[b] + owners[b] * segment for b in range(len(block_sizes))]
        return cls(tuple(offsets), tuple(block_sizes), tuple(owners), world_size, segment)

    @property
    def numel(self) -> int:
        return self.segment * self.world_size

    def block_view(self, flat: torch.Tensor, b: int) -> torch.Tensor:
        return flat.narrow(0, self.block_offsets[b], self.block_sizes[b])

    def rank_view(self, flat: torch.Tensor, rank: int) -> torch.Tensor:
        return flat.narrow(0, rank * self.segment, self.segment)

    def slot_view(self, flat: torch.Tensor, rank: int) -> torch.Tensor:
        """The scalar slot of ``rank`` (a 1-element view)."""
        return flat.narrow(0, (rank + 1) * self.segment - NUM_SLOTS, NUM_SLOTS)

    def all_slots(self, flat: torch.Tensor) -> torch.Tensor:
        """The scalar slots of every rank, a strided view of ``world_size`` elements."""
        return flat.view(self.world_size, self.segment)[:, self.segment - NUM_SLOTS]


def param_views(flat: torch.Tensor, start: int, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Views of ``flat`` shaped like ``params``, packed one after another from ``start``."""
    views, offset = [], start
    for p in params:
        views.append(flat.narrow(0, offset, p.numel()).view_as(p))
        offset += p.numel()
    return views
