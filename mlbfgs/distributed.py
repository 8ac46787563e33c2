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

from .layout import FlatLayout

# torch >= 2.10 renamed all_gather_into_tensor to all_gather_single
_all_gather_flat = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass
class LocalSharding:
    """A single process: owns every block, exchanges nothing."""

    rank: int = 0
    world_size: int = 1

    def all_gather(self, flat: torch.Tensor, layout: FlatLayout) -> None:
        return None

    def check_same_layout(self, block_sizes: Sequence[int]) -> None:
        return None


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
        """Raise on every rank (no hang) if the ranks disagree on the blocks."""
        sig = torch.tensor(
            [len(block_sizes), sum(block_sizes), zlib.crc32(repr(list(block_sizes)).encode())],
            dtype=torch.int64,
            device=self.device(),
        )
        out = torch.empty(self.world_size * 3, dtype=torch.int64, device=sig.device)
        _all_gather_flat(out, sig, group=self.group)
        sigs = out.view(self.world_size, 3).tolist()
        if any(s != sigs[0] for s in sigs):
            raise ValueError(
                "process_group: ranks disagree on the parameter blocks (number of blocks, total elements, "
                f"layout checksum per rank: {sigs}); every rank must build MLBFGS with the same model and blocks"
            )

    def all_gather(self, flat: torch.Tensor, layout: FlatLayout) -> None:
        if self.world_size == 1:
            return
        own = layout.rank_view(flat, self.rank)
        try:
            if self.comm_dtype is None or self.comm_dtype == flat.dtype:
                _all_gather_flat(flat, own, group=self.group)
            else:
                if self._comm is None or self._comm.numel() != flat.numel():
                    self._comm = torch.empty(flat.numel(), dtype=self.comm_dtype, device=flat.device)
                comm_own = layout.rank_view(self._comm, self.rank)
                comm_own.copy_(own)
                _all_gather_flat(self._comm, comm_own, group=self.group)
                flat.copy_(self._comm)
        except RuntimeError as err:
            raise RuntimeError(
                f"mlbfgs: exchanging block directions failed on rank {self.rank} of {self.world_size} "
                "(a rank died, timed out or called step() a different number of times)"
            ) from err


def resolve_sharding(process_group: Any, block_sizes: Sequence[int], comm_dtype: torch.dtype | None = None) -> Any:
    """The sharding for ``process_group`` (None: a single process)."""
    if process_group is None:
        return LocalSharding()
    sharding = ProcessGroupSharding(process_group, comm_dtype)
    sharding.check_same_layout(block_sizes)
    return sharding
