"""Block sharding over the ranks of a data-parallel job (the layer the math does not know about).

Every rank holds the same averaged gradient (DDP or an explicit all-reduce). Blocks are assigned
to ranks, balanced by size (:func:`mlbfgs.blocks.assign_blocks`); a rank keeps the curvature state
(EMAs, anchors, ring) of its own blocks only, computes their directions into its segment of the
flat buffer (:mod:`mlbfgs.layout`), and one ``all_gather_into_tensor`` per step gives every rank
the full direction. Curvature memory and the direction compute are thus divided by the number of
ranks, up to the imbalance of the block sizes.

Works with any backend that implements ``all_gather_into_tensor`` (NCCL; gloo in recent torch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from ..layout import FlatLayout
from .collectives import all_gather_flat, check_same_blocks
from .communication import NO_COMMUNICATION, CommunicationBytes
from .local import WholeBlocks


class DataParallelBlocks(WholeBlocks):
    """Blocks sharded over ``group``; directions exchanged with one all-gather per step.

    ``comm_dtype`` (e.g. ``torch.bfloat16``) sends the directions in a smaller dtype; every rank
    then uses the rounded directions, its own included, so replicas stay identical.
    """

    def __init__(self, group: Any, comm_dtype: torch.dtype | None = None) -> None:
        self.group, self.comm_dtype = group, comm_dtype
        if not dist.is_available() or not dist.is_initialized():
            raise ValueError("process_group: torch.distributed is not initialised; call init_process_group first")
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        self._comm: torch.Tensor | None = None

    def device(self) -> torch.device:
        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        """Raise on every rank (no hang) if the ranks disagree on the blocks or the shard mode."""
        check_same_blocks(self.group, block_sizes, self.device(), "blocks")

    def communication_bytes(self, blocks: Sequence[Sequence[torch.Tensor]], layout: FlatLayout, history_size: int,
                            work_dtype: torch.dtype) -> CommunicationBytes:
        """The all-gather of the directions: ``world_size * segment`` elements of ``comm_dtype`` (default
        the working dtype) per step, the segment being the largest rank's blocks plus its scalar slot
        (:mod:`mlbfgs.distribution.communication`); 0 on one rank."""
        if self.world_size == 1:
            return NO_COMMUNICATION
        element = torch.empty((), dtype=self.comm_dtype or work_dtype).element_size()
        return CommunicationBytes(0, 0, layout.numel * element)

    def all_gather(self, flat: torch.Tensor, layout: FlatLayout) -> None:
        if self.world_size == 1:
            return
        own = layout.rank_view(flat, self.rank)
        try:
            if self.comm_dtype is None or self.comm_dtype == flat.dtype:
                all_gather_flat(flat, own, group=self.group)
            else:
                if self._comm is None or self._comm.numel() != flat.numel():
                    self._comm = torch.empty(flat.numel(), dtype=self.comm_dtype, device=flat.device)
                comm_own = layout.rank_view(self._comm, self.rank)
                comm_own.copy_(own)
                all_gather_flat(self._comm, comm_own, group=self.group)
                flat.copy_(self._comm)
        except RuntimeError as err:
            raise RuntimeError(
                f"mlbfgs: exchanging block directions failed on rank {self.rank} of {self.world_size} "
                "(a rank died, timed out or called step() a different number of times)"
            ) from err
