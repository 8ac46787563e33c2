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

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from .communication import NO_COMMUNICATION, CommunicationBytes
from .layout import FlatLayout


def all_gather_flat(out: torch.Tensor, own: torch.Tensor, group: Any) -> None:
    """``all_gather_into_tensor`` (renamed ``all_gather_single`` in torch 2.10), looked up at each call
    (so that wrappers, e.g. the tests' collective counters, see it)."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, own, group=group)


#: MLBFGS(process_group=pg, shard=...): whole blocks per rank (this module) or every block's rows per rank
#: (:class:`mlbfgs.row_sharding.DataParallelRowSharding`)
SHARD_MODES = ("blocks", "rows")


@dataclass
class LocalSharding:
    """A single process: owns every block, exchanges nothing."""

    rank: int = 0
    world_size: int = 1

    def all_gather(self, flat: torch.Tensor, layout: FlatLayout) -> None:
        return None

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        return None

    def communication_bytes(self, blocks: Sequence[Sequence[torch.Tensor]], layout: FlatLayout, history_size: int,
                            work_dtype: torch.dtype) -> CommunicationBytes:
        """Nothing is exchanged (:mod:`mlbfgs.communication`)."""
        return NO_COMMUNICATION


@dataclass
class ProcessGroupSharding:
    """Blocks sharded over ``group``; directions exchanged with one all-gather per step.

    ``comm_dtype`` (e.g. ``torch.bfloat16``) sends the directions in a smaller dtype; every rank
    then uses the rounded directions, its own included, so replicas stay identical.
    """

    group: Any
    comm_dtype: torch.dtype | None = None
    rank: int = field(init=False)
    world_size: int = field(init=False)

    def __post_init__(self) -> None:
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
        (:mod:`mlbfgs.communication`); 0 on one rank."""
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


def check_same_blocks(group: Any, block_sizes: Sequence[int], device: torch.device | str, shard: str) -> None:
    """Raise ``ValueError`` on every rank of ``group`` (no hang) if the ranks disagree on the blocks
    (number, total elements, a checksum of the sizes) or on ``shard`` (one of :data:`SHARD_MODES`):
    one all-gather of four integers, the same collective in both modes."""
    world_size = dist.get_world_size(group)
    sig = torch.tensor(
        [len(block_sizes), sum(block_sizes), zlib.crc32(repr(list(block_sizes)).encode()), SHARD_MODES.index(shard)],
        dtype=torch.int64,
        device=device,
    )
    out = torch.empty(world_size * sig.numel(), dtype=torch.int64, device=sig.device)
    all_gather_flat(out, sig, group=group)
    sigs = out.view(world_size, sig.numel()).tolist()
    if any(s != sigs[0] for s in sigs):
        raise ValueError(
            "process_group: ranks disagree on the parameter blocks or the shard mode (number of blocks, total "
            f"elements, layout checksum, shard mode index in {SHARD_MODES} per rank: {sigs}); every rank must "
            "build MLBFGS with the same model, blocks and shard"
        )


def resolve_sharding(process_group: Any, block_sizes: Sequence[int], comm_dtype: torch.dtype | None = None) -> Any:
    """The sharding for ``process_group`` (None: a single process)."""
    if process_group is None:
        return LocalSharding()
    sharding = ProcessGroupSharding(process_group, comm_dtype)
    sharding.check_same_layout(block_sizes)
    return sharding
