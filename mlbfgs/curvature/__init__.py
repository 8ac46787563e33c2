"""The curvature of mL-BFGS's blocks: per block a ring of damped pairs and the inverse-Hessian
product it defines.

Where a block's curvature lives decides how its inner products are formed: whole on one rank
(:class:`WholeBlockCurvature`), or as rows spread over the ranks, completed by one all-reduce
(:class:`RowCurvature`). Both implement :class:`Curvature`, the phases of a step that differ; the
step itself (:meth:`mlbfgs.MLBFGS.step`) runs the same Algorithm 1 over either.
"""

from .history import CurvatureHistory, close_push
from .protocol import Curvature
from .rows import RowCurvature
from .whole_blocks import WholeBlockCurvature, new_block_state

__all__ = ["Curvature", "CurvatureHistory", "RowCurvature", "WholeBlockCurvature", "close_push", "new_block_state"]
