"""Where a row-sharded block's state lives, and how it is saved and loaded.

Per block, this rank's rows of the averages, anchors and ring sit in contiguous buffers (what the step
works on, :class:`mlbfgs.curvature.rows.RowCurvature`); ``state[p][ROWS]`` holds DTensor views of them
per parameter (what ``state_dict`` and ``torch.distributed.checkpoint`` see, resharding them to other
world sizes); the replicated Gram and compact matrices, gamma and counters sit under ``BLOCK`` of the
block's first parameter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .. import state_keys as K
from ..config import CurvatureConfig
from ..distribution import is_dtensor

if TYPE_CHECKING:
    from ..distribution.fsdp_rows import FullyShardedRows


def row_vector_keys(config: CurvatureConfig) -> tuple[str, ...]:
    """The flat vectors a block keeps rows of."""
    keys = (K.PARAM_AVG, K.GRAD_AVG, K.PARAM_ANCHOR, K.GRAD_ANCHOR)
    return keys + ((K.S_PREV, K.Y_PREV) if config.pair_momentum > 0 else ())


def new_row_buffers(block: Sequence[torch.Tensor], rows_of: FullyShardedRows, config: CurvatureConfig,
                    work: torch.dtype, history: torch.dtype) -> dict[str, torch.Tensor]:
    """Zeroed row buffers of a block: this rank's rows of every parameter, concatenated."""
    local = [rows_of.local(p) for p in block]
    n, m = sum(t.numel() for t in local), config.history_size
    device = local[0].device
    rows = {name: torch.zeros(n, dtype=work, device=device) for name in row_vector_keys(config)}
    rows[K.HISTORY] = torch.zeros(2 * m, n, dtype=history, device=device)
    return rows


def new_replicated_state(config: CurvatureConfig, work: torch.dtype, device: torch.device) -> dict[str, Any]:
    """The part of a row-sharded block every rank holds whole: Gram and compact matrices, gamma, counters."""
    m = config.history_size
    return {
        K.GRAM: torch.zeros(2 * m, 2 * m, dtype=torch.float64, device=device),
        K.COMPACT: torch.zeros(2 * m, 2 * m, dtype=work, device=device),
        K.GAMMA: torch.ones((), dtype=work, device=device),
        K.NUM_PAIRS: 0,
        K.HEAD: 0,
        K.PAIRS_FORMED: 0,
        K.PAIRS_ACCEPTED: 0,
        K.PAIRS_REJECTED: 0,
    }


def bind_row_views(block: Sequence[torch.Tensor], rows: dict[str, torch.Tensor], rows_of: FullyShardedRows,
                   config: CurvatureConfig, state: Any) -> None:
    """``state[p][ROWS]``: DTensor views of the block's row buffers, shaped like ``p`` (sharded on
    dim 0) and, for the ring, ``(2m, *p.shape)`` (sharded on dim 1)."""
    offset = 0
    two_m = rows[K.HISTORY].shape[0]
    for p in block:
        shape = rows_of.local(p).shape
        k = shape.numel()
        views = {name: rows_of.shard_like(rows[name].narrow(0, offset, k).view(shape), p)
                 for name in row_vector_keys(config)}
        views[K.HISTORY] = rows_of.shard_like(rows[K.HISTORY].narrow(1, offset, k).view(two_m, *shape), p,
                                              leading=two_m)
        state[p][K.ROWS] = views
        offset += k


def load_row_buffers(b: int, block: Sequence[torch.Tensor], rows: dict[str, torch.Tensor],
                     saved: dict[torch.Tensor, dict[str, Any]], rows_of: FullyShardedRows,
                     config: CurvatureConfig) -> None:
    """Copy each parameter's saved rows (DTensors, already resharded to this rank's rows by
    ``torch.distributed.checkpoint``) into block ``b``'s row buffers."""
    offset = 0
    two_m = rows[K.HISTORY].shape[0]
    work, hist = rows[K.PARAM_AVG].dtype, rows[K.HISTORY].dtype
    for p in block:
        shape = rows_of.local(p).shape
        k = shape.numel()
        entry = saved.get(p)
        if entry is None:
            raise ValueError(
                f"load_state_dict: the rows of a parameter of block {b} (shape {tuple(p.shape)}) are missing "
                "(frozen when loading through the distributed-checkpoint helpers?); unfreeze before loading"
            )
        targets = {name: rows[name].narrow(0, offset, k).view(shape) for name in row_vector_keys(config)}
        targets[K.HISTORY] = rows[K.HISTORY].narrow(1, offset, k).view(two_m, *shape)
        for name, target in targets.items():
            value = entry[name]
            local = value.to_local() if is_dtensor(value) else value
            if tuple(local.shape) != tuple(target.shape):
                raise ValueError(
                    f"load_state_dict: saved rows {name!r} of shape {tuple(local.shape)} do not fit this "
                    f"rank's {tuple(target.shape)} (saved on another number of ranks); load through "
                    "torch.distributed.checkpoint with get_/set_optimizer_state_dict, which reshards them"
                )
            target.copy_(local.to(dtype=hist if name == K.HISTORY else work))
        offset += k
