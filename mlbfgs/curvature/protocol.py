"""What a step asks of the curvature, wherever a block's curvature lives.

:class:`mlbfgs.MLBFGS` runs Algorithm 1 once (averages, pairs, direction, update); the parts that
depend on whether a rank holds whole blocks or its rows of every block are behind this interface,
with one implementation each: :class:`~mlbfgs.curvature.whole_blocks.WholeBlockCurvature` and
:class:`~mlbfgs.curvature.rows.RowCurvature`. Both form pairs with :mod:`mlbfgs.pairs`, store them
with :func:`mlbfgs.curvature.history.close_push` and multiply with :mod:`mlbfgs.compact`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch

from ..config import CurvatureConfig

if TYPE_CHECKING:
    from ..pairs import PairRecord
    from ..step_buffers import StepPhase


class Curvature(Protocol):
    """The strategy-dependent phases of one step signature (which blocks have gradients)."""

    def begin_step(self, flat: torch.Tensor, blocks: Sequence[int], with_pairs: Sequence[int],
                   check_finite: bool) -> bool:
        """Before the averages move: the step's reductions, if any. False (on every rank) when the
        gradient has a non-finite entry and ``check_finite`` asks to skip it."""
        ...

    def pair_products_(self, b: int, s: torch.Tensor, y: torch.Tensor) -> None:
        """Block ``b``'s inner products of a new pair (partial sums where the block is sharded)."""
        ...

    def reduce_pair_products(self) -> None:
        """Complete the pair products of this step (one collective, one host sync)."""
        ...

    def pair_dots(self, b: int) -> tuple[float, float, float, float]:
        """``(s.y, s.s, y.y, g.g)`` of block ``b``'s new pair (``g.g`` NaN where not known)."""
        ...

    def push(self, b: int, s: torch.Tensor, y: torch.Tensor, damped: tuple[float, float, float]) -> None:
        """Store the damped pair ``(s, phi y + (1 - phi) s)`` in block ``b``'s ring; ``damped`` is
        ``(phi, s.y_hat, y_hat.y_hat)`` of :func:`mlbfgs.pairs.accept_pair`."""
        ...

    def precondition_(self, phase: StepPhase, config: CurvatureConfig) -> None:
        """Phase 4: ``g <- H g`` in place for the blocks with pairs (this rank's part)."""
        ...

    def assemble_(self, flat: torch.Tensor, phase: StepPhase, config: CurvatureConfig,
                  records: list[PairRecord]) -> None:
        """Phases 5-6: exchange the directions and rescale them; ``records`` (this step's pairs) get their
        direction shares in place where they are known."""
        ...
