"""Which distribution strategy a set of parameters and settings calls for."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch

from .ddp_blocks import DataParallelBlocks
from .ddp_rows import DataParallelRows
from .fsdp_rows import FullyShardedRows, is_dtensor
from .local import Local
from .protocol import SHARD_MODES, Distributor


def resolve_distributor(params: Sequence[torch.Tensor], block_sizes: Sequence[int], process_group: Any = None,
                        comm_dtype: torch.dtype | None = None, history_dtype: torch.dtype | None = None,
                        shard: str = "blocks") -> Distributor:
    """The strategy for ``params``, checked to agree across ranks on ``block_sizes``:

    - ``fully_shard`` DTensors: :class:`FullyShardedRows` (``shard`` is not read);
    - plain parameters with a ``process_group``: :class:`DataParallelBlocks` (``shard="blocks"``) or
      :class:`DataParallelRows` (``shard="rows"``);
    - else :class:`Local`.

    Raises ``ValueError`` naming the parameter or the argument: ``shard`` not in :data:`SHARD_MODES`;
    a mix of DTensor and plain parameters, DTensors on different meshes, an explicit ``process_group``
    or ``comm_dtype`` with DTensors (the mesh gives the group and no direction is exchanged); a reduced
    ``history_dtype`` with rows (their rows are stored normalised by their norm, which no rank knows
    alone).
    """
    if shard not in SHARD_MODES:
        raise ValueError(f"shard: expected one of {SHARD_MODES}, got {shard!r}")
    distributor: Distributor
    kinds = [is_dtensor(p) for p in params]
    if not any(kinds):
        if process_group is None:
            return Local()
        if shard == "blocks":
            distributor = DataParallelBlocks(process_group, comm_dtype)
        else:
            _refuse_reduced_history(history_dtype, "with shard='rows'")
            distributor = DataParallelRows(process_group, params[0].device.type, comm_dtype)
        distributor.check_same_layout(block_sizes)
        return distributor
    if not all(kinds):
        i, j = kinds.index(True), kinds.index(False)
        raise ValueError(
            f"params: parameter {i} is a DTensor but parameter {j} (shape {tuple(params[j].shape)}) is not; with "
            "fully_shard, shard every parameter the optimizer trains (fully_shard the root module too)"
        )
    meshes = [p.device_mesh for p in params]  # type: ignore[attr-defined]  # DTensors
    mesh = meshes[0]
    for i, other in enumerate(meshes):
        if other != mesh:
            raise ValueError(f"params: parameter {i} lives on another device mesh than parameter 0; use one mesh")
    if process_group is not None:
        raise ValueError("process_group: leave it None with DTensor (fully_shard) parameters; their mesh gives it")
    if comm_dtype is not None:
        raise ValueError("comm_dtype: with DTensor (fully_shard) parameters no direction is exchanged; leave it None")
    _refuse_reduced_history(history_dtype, "with DTensor (fully_shard) parameters")
    distributor = FullyShardedRows(mesh)
    distributor.check_same_layout(block_sizes)
    return distributor


def _refuse_reduced_history(history_dtype: torch.dtype | None, where: str) -> None:
    if history_dtype in (torch.float16, torch.bfloat16):
        raise ValueError(
            f"history_dtype: {history_dtype} is not supported {where} (reduced rows are stored normalised by a "
            "norm no rank knows alone); use float32 or float64"
        )


def refuse_zero_redundancy(max_depth: int = 12) -> None:
    """``ValueError`` when ``torch.distributed.optim.ZeroRedundancyOptimizer`` on more than one rank is
    building this optimizer. ZeRO hands each rank only its partition of the parameters, so the global
    norm, the blocks and the curvature would each see a part of the model: another method, with a step
    ``sqrt(world size)`` times longer. ``shard="rows"`` shards the state the same way and keeps the
    mathematics of one process. Found by looking up the constructor's callers (ZeRO passes no marker)."""
    zero = sys.modules.get("torch.distributed.optim.zero_redundancy_optimizer")
    if zero is None:  # never imported: not wrapped
        return
    frame: FrameType | None = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return
        owner = frame.f_locals.get("self")
        if isinstance(owner, zero.ZeroRedundancyOptimizer):
            if getattr(owner, "world_size", 1) > 1:
                raise ValueError(
                    "MLBFGS under torch.distributed.optim.ZeroRedundancyOptimizer: each of its "
                    f"{owner.world_size} ranks would see only its partition of the parameters, so the direction's "
                    "norm, the blocks and the curvature would be another method's. Use MLBFGS(params, "
                    "process_group=..., shard='rows') instead: it shards the curvature and the state over the "
                    "ranks and keeps the mathematics of one process"
                )
            return
        frame = frame.f_back
