"""What one MLBFGS step sends between ranks, per collective (for benchmarks and capacity planning).

The numbers are the bytes of the tensor each collective works on, per rank and per step: for an
all-reduce its buffer, for an all-gather its gathered output (``world_size`` equal segments). How
many bytes cross the wire depends on the algorithm; with a ring, each rank sends and receives about
``(N - 1) / N`` of an all-gather's output and ``2 (N - 1) / N`` of an all-reduce's buffer. A single
process (or a group of one rank) runs no collective: every field is 0.

The formulas, with ``B`` blocks, history size ``m``, ``N`` ranks and ``e`` bytes per element of the
working dtype (4 for float32 parameters, 8 for float64):

- whole blocks (``process_group=pg``, ``shard="blocks"``, :mod:`mlbfgs.distribution.ddp_blocks`):
  ``all_gather = N * S * c`` with ``S`` the largest rank's block elements plus one scalar slot
  (:class:`mlbfgs.layout.FlatLayout`) and ``c`` the bytes of ``comm_dtype`` (default ``e``); no all-reduce.
- rows, FSDP2 (``fully_shard`` parameters, :mod:`mlbfgs.curvature.rows`):
  ``all_reduce = (B (2m + 1) + 1) e``; a pair-forming step adds ``all_reduce_pair = B (4m + 5) e``;
  no all-gather.
- rows, DDP (``process_group=pg``, ``shard="rows"``): the same all-reduces, and
  ``all_gather = N * R * c`` with ``R`` the largest number of elements any rank holds rows of (its
  rows of every parameter; ``torch.chunk`` sizes of dim 0).
"""

from __future__ import annotations

from typing import NamedTuple


class CommunicationBytes(NamedTuple):
    """Bytes per rank of a step's collectives (see the module docstring for the formulas)."""

    all_reduce: int  #: all-reduced in every step (0 without row sharding)
    all_reduce_pair: int  #: all-reduced in addition on a pair-forming step
    all_gather: int  #: the all-gather's output, every step (0 under FSDP2)

    def per_step(self, pair: bool = False) -> int:
        """Bytes of one step, with or without a pair formed."""
        return self.all_reduce + self.all_gather + (self.all_reduce_pair if pair else 0)


NO_COMMUNICATION = CommunicationBytes(0, 0, 0)
