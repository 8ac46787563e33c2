"""The curvature of whole blocks: each rank holds every element of its blocks (a single process, or
DDP with ``shard="blocks"``), so every inner product is computed where it is needed and the only
exchange is the all-gather of the directions (:mod:`mlbfgs.distribution.ddp_blocks`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from .. import state_keys as K
from ..config import CurvatureConfig
from ..layout import FlatLayout
from .history import CurvatureHistory
from .scaling import kl_factor_

if TYPE_CHECKING:
    from ..distribution import Distributor
    from ..pairs import PairRecord
    from ..step_buffers import StepPhase

#: per block in the pair products: s.y, s.s, y.y, g.g
_PAIR_DOTS = 4


def new_block_state(n: int, config: CurvatureConfig, device: torch.device, work: torch.dtype,
                    history: torch.dtype) -> dict[str, Any]:
    """A block's zeroed state: its ring, averages and anchors of ``n`` elements, counters."""
    st = CurvatureHistory.new_state(n, config.history_size, history, device, work)
    for name in (K.PARAM_AVG, K.GRAD_AVG, K.PARAM_ANCHOR, K.GRAD_ANCHOR):
        st[name] = torch.zeros(n, dtype=work, device=device)
    if config.pair_momentum > 0:
        st[K.S_PREV] = torch.zeros(n, dtype=work, device=device)
        st[K.Y_PREV] = torch.zeros(n, dtype=work, device=device)
    st.update({K.PAIRS_FORMED: 0, K.PAIRS_ACCEPTED: 0, K.PAIRS_REJECTED: 0})
    return st


class WholeBlockCurvature:
    """The rings of this rank's whole blocks (:class:`CurvatureHistory`) and the step's scratch.

    Args:
        state: per own block, its state (ring, averages, anchors, counters).
        flat: the step's flat buffer (every rank's blocks, :class:`mlbfgs.layout.FlatLayout`).
        grads: per own block, its part of the step's flat buffer (gradient, then direction).
        layout: the flat buffer's layout (every rank's blocks and scalar slots).
        distributor: exchanges the directions (:class:`mlbfgs.distribution.Distributor`).
    """

    def __init__(self, state: dict[int, dict[str, Any]], flat: torch.Tensor, grads: dict[int, torch.Tensor],
                 layout: FlatLayout, distributor: Distributor) -> None:
        self.state, self.flat, self.grads, self.layout, self.distributor = state, flat, grads, layout, distributor
        self.histories = {b: CurvatureHistory(st) for b, st in state.items()}
        work, device = flat.dtype, flat.device
        self.scalar = torch.zeros((), dtype=work, device=device)
        self.products = {b: torch.zeros(_PAIR_DOTS, dtype=work, device=device) for b in state}
        self.gg = torch.zeros(1, dtype=work, device=device)  # a block's g.g ("kl"), written by mv
        self.block_norms = torch.zeros(2, dtype=work, device=device)  # |g_b|, |d_b| ("block")
        self.kl_clip = torch.zeros((), dtype=work, device=device)

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def begin_step(self, flat: torch.Tensor, blocks: Sequence[int], with_pairs: Sequence[int],
                   check_finite: bool) -> bool:
        """Nothing to reduce; with ``check_finite`` one host sync on the max-norm (inf/NaN propagate,
        and it cannot overflow)."""
        if not check_finite:
            return True
        torch.linalg.vector_norm(flat, ord=float("inf"), out=self.scalar)
        return math.isfinite(self.scalar.item())

    def pair_products_(self, b: int, s: torch.Tensor, y: torch.Tensor) -> None:
        """``s.y, s.s, y.y`` and ``g.g`` (diagnostics only, read in the same host sync). ``torch.dot(out=)``
        copies through a new scalar on CPU; mv would change the bits of every committed mL-BFGS run."""
        dots, g = self.products[b], self.grads[b]
        torch.dot(s, y, out=dots[0])
        torch.dot(s, s, out=dots[1])
        torch.dot(y, y, out=dots[2])
        torch.dot(g, g, out=dots[3])

    def reduce_pair_products(self) -> None:
        """The products are whole already; they are read back per block in :meth:`pair_dots`."""
        return None

    def pair_dots(self, b: int) -> tuple[float, float, float, float]:
        sy, ss, yy, gg = self.products[b].tolist()
        return sy, ss, yy, gg

    def push(self, b: int, s: torch.Tensor, y: torch.Tensor, damped: tuple[float, float, float]) -> None:
        """Into the ring; its Gram entries come from the stored rows (:meth:`CurvatureHistory.push`)."""
        self.histories[b].push(s, y, damped[0])

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def precondition_(self, phase: StepPhase, config: CurvatureConfig) -> None:
        """``g <- H g`` per own block with pairs (eager under ``torch.compile``: inductor on CPU lowers the
        matrix-vector products with the ring to generated reductions that run 2-3x slower than BLAS
        gemv); for ``"kl"`` also ``g.Hg`` into the rank's slot, for ``"block"`` ``d_b |g_b| / |d_b|``."""
        flat = self.flat
        kl = config.direction_norm == "kl" and phase.active
        if kl:  # g.d of this rank's blocks: gamma g.g + p^T Wf p, or g.g without pairs
            slot = self.layout.slot_view(flat, self.distributor.rank)
            slot.zero_()
            for b in phase.blocks:
                g = self.grads[b]
                torch.mv(g.unsqueeze(0), g, out=self.gg)  # g.g; torch.dot(out=) allocates on CPU
                if b in phase.with_pairs:
                    slot.addcmul_(self.gg, self.state[b][K.GAMMA])
                else:
                    slot.add_(self.gg)
        per_block = config.direction_norm == "block"
        norms, tiny = self.block_norms, torch.finfo(flat.dtype).tiny
        for b in phase.with_pairs:
            g = self.grads[b]
            if per_block:  # |g_b| before g becomes d_b in place, then d_b * |g_b| / |d_b|
                torch.linalg.vector_norm(g, out=norms[0])
            self.histories[b].apply_(g)
            if kl:
                self.histories[b].add_quadratic_(slot)
            if per_block:
                torch.linalg.vector_norm(g, out=norms[1])
                g.mul_(norms[0].div_(norms[1].clamp_(min=tiny)))

    def assemble_(self, flat: torch.Tensor, phase: StepPhase, config: CurvatureConfig,
                  records: list[PairRecord]) -> None:
        """The all-gather of every rank's blocks, the direction shares of a pair step, then
        ``"global"``/``"block"``: ``d / |d|`` (as ``(d / a) / |d / a|``, ``a = max |d_i|``: no square
        overflows or underflows); ``"kl"``: ``d min(1, sqrt(kappa / g.d))``, once ``t > T``."""
        self.distributor.all_gather(flat, self.layout)
        if records:
            self._direction_shares(flat, records)
        if not phase.active:
            return
        if config.direction_norm in ("global", "block"):
            tiny = torch.finfo(flat.dtype).tiny
            torch.linalg.vector_norm(flat, ord=float("inf"), out=self.scalar)
            flat.div_(self.scalar.clamp_(min=tiny))
            torch.linalg.vector_norm(flat, out=self.scalar)
            flat.div_(self.scalar.clamp_(min=tiny))
        elif config.direction_norm == "kl":
            torch.sum(self.layout.all_slots(flat), dim=0, out=self.scalar)
            self.kl_clip.fill_(config.kl_clip)
            nu = kl_factor_(self.scalar, self.kl_clip)
            for rk in range(self.layout.world_size):
                self.layout.slot_view(flat, rk).zero_()
            flat.mul_(nu)

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _direction_shares(self, flat: torch.Tensor, records: list[PairRecord]) -> None:
        """Each recorded block's share of ``|d|^2`` before the rescaling, in place (pair steps only: one
        host sync every T steps). After the all-gather every block's direction is in the flat buffer.
        Eager, and the list is changed in place, so a compiled step sets no attribute (torch 2.11's
        dynamo refuses that)."""
        views = [self.layout.block_view(flat, b) for b in range(len(self.layout.block_sizes))]
        squares = torch.stack(torch._foreach_norm(views)).double().square().tolist()
        total = sum(squares)
        records[:] = [replace(r, direction_share=squares[r.block] / total if total > 0 else math.nan)
                      for r in records]

