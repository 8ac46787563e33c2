"""The collectives the strategies share (looked up at each call, so wrappers such as the tests'
collective counters see them)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

from .protocol import SHARD_MODES


def all_gather_flat(out: torch.Tensor, own: torch.Tensor, group: Any) -> None:
    """``all_gather_into_tensor`` (renamed ``all_gather_single`` in torch 2.10), looked up at each call
    (so that wrappers, e.g. the tests' collective counters, see it)."""
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, own, group=group)


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
