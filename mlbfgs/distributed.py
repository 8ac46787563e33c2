"""Block sharding over the ranks of a data-parallel job (the layer the math does not know about).

Every rank holds the same averaged gradient. Blocks are assigned to ranks (balanced by size); a
rank keeps the curvature state of its own blocks only, computes their directions into its segment
of the flat buffer (:mod:`mlbfgs.layout`), and one ``all_gather_into_tensor`` per step gives every
rank the full direction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .layout import FlatLayout


@dataclass
class LocalSharding:
    """A single process: owns every block, exchanges nothing."""

    rank: int = 0
    world_size: int = 1

    def all_gather(self, flat: torch.Tensor, layout: FlatLayout) -> None:
        return None


def resolve_sharding(process_group: Any, block_sizes: Sequence[int]) -> Any:
    if process_group is None:
        return LocalSharding()
    raise NotImplementedError("process_group: distributed sharding is not available yet")
