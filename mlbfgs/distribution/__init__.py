"""How MLBFGS spreads its curvature over ranks: four strategies behind one protocol
(:class:`Distributor`), one file each.

- :class:`Local` (``local.py``): one process holds every block; nothing is exchanged.
- :class:`DataParallelBlocks` (``ddp_blocks.py``): each rank holds whole blocks, balanced by size;
  one all-gather of the directions per step.
- :class:`DataParallelRows` (``ddp_rows.py``): each rank holds its rows of every block; an
  all-reduce of ``2m + 1`` numbers per block, then one all-gather of the rows' directions.
- :class:`FullyShardedRows` (``fsdp_rows.py``): each rank holds its ``fully_shard`` rows of every
  block; the all-reduce only.

Whole blocks run :class:`mlbfgs.curvature.WholeBlockCurvature`, rows
:class:`mlbfgs.curvature.RowCurvature`; bytes per collective: :mod:`.communication`.
"""

from .communication import NO_COMMUNICATION, CommunicationBytes
from .ddp_blocks import DataParallelBlocks
from .ddp_rows import DataParallelRows
from .fsdp_rows import FullyShardedRows, is_dtensor, row_sharding_problem
from .local import Local
from .protocol import SHARD_MODES, Distributor
from .resolve import resolve_distributor

__all__ = [
    "NO_COMMUNICATION", "SHARD_MODES", "CommunicationBytes", "DataParallelBlocks", "DataParallelRows", "Distributor",
    "FullyShardedRows", "Local", "is_dtensor", "resolve_distributor", "row_sharding_problem",
]
