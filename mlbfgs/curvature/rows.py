r"""The curvature of row-sharded blocks (FSDP2, or DDP with ``shard="rows"``), with one all-reduce per
step (where the rows come from: :mod:`mlbfgs.distribution.fsdp_rows`, :mod:`mlbfgs.distribution.ddp_rows`).

Every rank holds, per block ``b``, its rows (a contiguous piece of each parameter's flat vector,
concatenated) of the averages, anchors and the ring ``SY`` (``2m x n_local``), and the same copy of
the Gram matrix ``SY SY^T`` (float64), the compact matrix ``Wf``, gamma and the counters
(:mod:`mlbfgs.compact`). The compact form needs the rows only through sums over rows:

- ``p = SY g``: each rank's partial ``2m`` vector; the all-reduce completes it; then ``c = Wf p``
  on every rank and ``d_local = gamma g_local + SY_local^T c`` without exchange.
- the norms of the rescaling follow from replicated numbers, so they need no second collective:
  ``|d|^2 = gamma^2 g.g + 2 gamma c.p + c^T Gram c`` and ``g.d = gamma g.g + p.c`` (float64);
  a block without pairs has ``d = g``.
- a new pair ``(s, y)``: the dots ``s.s, s.y, y.y``, ``SY_old s``, ``SY_old y`` (and ``s.g, y.g``)
  go into a second all-reduce; every rank then takes the same damping decision and fills the new
  Gram rows by linearity, ``r.y_hat = phi r.y + (1 - phi) r.s``, and the new entries of ``p``
  (``s.g`` and ``y_hat.g``) the same way.

The step's all-reduce runs before the averages are updated (``p`` uses the ring as it was; a pair
formed in this step only replaces its two entries), so the check for a non-finite gradient rides on
it: a rank's flag is ``max|g| * 0`` (0, or NaN for an inf/NaN entry) and the sum is NaN on every rank
when any rank saw one, so all ranks skip the step together before touching the averages.

Communication: per step ``n_blocks * (2m + 1) + 1`` numbers of the working dtype are all-reduced;
a pair-forming step adds ``n_blocks * (4m + 5)``. With ``check_finite`` the step reads the flag back
(one host sync, as the single process's check does); a pair-forming step reads its dots back once.

Every rank must see the same blocks with gradients in a step (under FSDP2 each rank gets its shard
of the gradient of every parameter used), since the decisions are taken on all ranks alike.

Reduced history dtypes (bfloat16/float16 rows stored normalised) are not supported here
(:func:`mlbfgs.distribution.resolve_distributor` refuses them): the rows would be normalised by
global norms and the Gram matrix, built from unrounded dots, would not match the rounded rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from .. import state_keys as K
from ..compact import apply_compact
from ..config import CurvatureConfig
from .history import close_push
from .scaling import kl_factor_

if TYPE_CHECKING:
    from ..distribution import Distributor
    from ..layout import FlatLayout
    from ..pairs import PairRecord
    from ..step_buffers import StepPhase

#: per block in the pair all-reduce: s.y, s.s, y.y, s.g, y.g, then SY_old s (2m) and SY_old y (2m)
_PAIR_DOTS = 5


class RowCurvature:
    """The buffers and phases of one step signature (which blocks have gradients).

    Args:
        small: per block, the replicated state (``GRAM``, ``COMPACT``, ``GAMMA``, ``NUM_PAIRS``,
            ``HEAD`` and the pair counters), as stored in ``optimizer.state``.
        rows: per block, the rank's rows: ``PARAM_AVG``, ``GRAD_AVG``, anchors (and ``S_PREV``,
            ``Y_PREV``) flat ``n_local`` vectors in the working dtype, ``HISTORY`` ``2m x n_local``.
        flat: the step's flat buffer (this rank's rows of every block).
        grads: per block, the rank's rows of this step's gradient (a view of ``flat``).
        layout: the flat buffer's layout.
        distributor: sums partial products over the ranks and exchanges the rows' directions.
    """

    def __init__(self, small: dict[int, dict[str, Any]], rows: dict[int, dict[str, Any]], flat: torch.Tensor,
                 grads: dict[int, torch.Tensor], layout: FlatLayout, distributor: Distributor) -> None:
        self.small, self.rows, self.grads, self.layout, self.distributor = small, rows, grads, layout, distributor
        self.reduce = distributor.all_reduce_
        blocks = sorted(small)
        some = rows[blocks[0]][K.HISTORY]
        m = some.shape[0] // 2
        work, device = flat.dtype, flat.device
        f64 = torch.float64
        width, pair_width = 2 * m + 1, 4 * m + _PAIR_DOTS
        # step all-reduce: per block p (2m) and g.g, then the non-finite flag
        self.step_buf = torch.zeros(len(blocks) * width + 1, dtype=work, device=device)
        self.pair_buf = torch.zeros(len(blocks) * pair_width, dtype=work, device=device)
        self.flag = self.step_buf.narrow(0, self.step_buf.numel() - 1, 1)
        self.p, self.gg, self.dots, self.sy_s, self.sy_y, self.c = {}, {}, {}, {}, {}, {}
        for i, b in enumerate(blocks):
            self.p[b] = self.step_buf.narrow(0, i * width, 2 * m)
            self.gg[b] = self.step_buf.narrow(0, i * width + 2 * m, 1)
            o = i * pair_width
            self.dots[b] = self.pair_buf.narrow(0, o, _PAIR_DOTS)
            self.sy_s[b] = self.pair_buf.narrow(0, o + _PAIR_DOTS, 2 * m)
            self.sy_y[b] = self.pair_buf.narrow(0, o + _PAIR_DOTS + 2 * m, 2 * m)
            self.c[b] = torch.zeros(2 * m, dtype=work, device=device)
        self._pair_offsets = {b: i * pair_width for i, b in enumerate(blocks)}
        self._values: list[float] = []
        self.scalar = torch.zeros((), dtype=work, device=device)
        self.zero = torch.zeros(1, dtype=work, device=device)
        self.col_y = torch.zeros(2 * m, dtype=f64, device=device)
        # float64 scratch of the rescaling (replicated numbers only). One-element vectors, not 0-dim:
        # inner products are written with mv of a one-row view (torch.dot(out=) allocates on CPU).
        self.c64 = torch.zeros(2 * m, dtype=f64, device=device)
        self.p64 = torch.zeros(2 * m, dtype=f64, device=device)
        self.q64 = torch.zeros(2 * m, dtype=f64, device=device)
        self.t64 = torch.zeros(1, dtype=f64, device=device)
        self.u64 = torch.zeros(1, dtype=f64, device=device)
        self.gamma64 = torch.zeros(1, dtype=f64, device=device)
        self.acc64 = torch.zeros(1, dtype=f64, device=device)
        self.kl_clip64 = torch.zeros(1, dtype=f64, device=device)
        self.scale = torch.zeros(1, dtype=work, device=device)

    # ------------------------------------------------------------------ the step's all-reduce
    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def begin_step(self, flat: torch.Tensor, blocks: Sequence[int], with_pairs: Sequence[int],
                   check_finite: bool) -> bool:
        """Partial ``g.g`` and ``SY g`` of the blocks with gradients (and the non-finite flag), summed
        over the ranks in one all-reduce. False (on every rank): some rank's gradient is not finite."""
        self.step_buf.zero_()
        for b in blocks:
            g = self.grads[b]
            torch.mv(g.view(1, -1), g, out=self.gg[b])
        for b in with_pairs:
            torch.mv(self.rows[b][K.HISTORY], self.grads[b], out=self.p[b])
        if check_finite:  # max|g| * 0: 0 when finite, NaN for an inf or NaN entry
            torch.linalg.vector_norm(flat, ord=float("inf"), out=self.scalar)
            torch.mul(self.scalar, self.zero, out=self.flag)
        self.reduce(self.step_buf)
        return not check_finite or math.isfinite(self.flag.item())

    # ------------------------------------------------------------------ pairs
    def pair_products_(self, b: int, s: torch.Tensor, y: torch.Tensor) -> None:
        """The rank's partial ``s.y, s.s, y.y, s.g, y.g, SY_old s, SY_old y`` of block ``b``."""
        d, g, history = self.dots[b], self.grads[b], self.rows[b][K.HISTORY]
        torch.dot(s, y, out=d[0])
        torch.dot(s, s, out=d[1])
        torch.dot(y, y, out=d[2])
        torch.dot(s, g, out=d[3])
        torch.dot(y, g, out=d[4])
        torch.mv(history, s, out=self.sy_s[b])
        torch.mv(history, y, out=self.sy_y[b])

    def reduce_pair_products(self) -> None:
        """One all-reduce of every block's pair products and one host sync; every rank then takes the
        same decisions."""
        self.reduce(self.pair_buf)
        self._values = self.pair_buf.tolist()

    def pair_dots(self, b: int) -> tuple[float, float, float, float]:
        o = self._pair_offsets[b]
        return self._values[o], self._values[o + 1], self._values[o + 2], math.nan

    def push(self, b: int, s: torch.Tensor, y: torch.Tensor, damped: tuple[float, float, float]) -> None:
        """Store the pair's rows in the ring's next slot; the Gram rows and this step's ``p`` follow
        from the reduced dots by linearity (identical on every rank), ``r.y_hat = phi r.y + (1 - phi) r.s``."""
        st, history = self.small[b], self.rows[b][K.HISTORY]
        phi, sy_hat, yy_hat = damped
        ss = self._values[self._pair_offsets[b] + 1]
        cap = history.shape[0] // 2
        slot = st[K.HEAD]
        ys = cap + slot
        history[slot].copy_(s)
        torch.lerp(s, y, phi, out=history[ys])  # y_hat = phi y + (1 - phi) s = s + phi (y - s)
        gram = st[K.GRAM]
        col_s = self.sy_s[b]
        torch.lerp(col_s.to(torch.float64), self.sy_y[b].to(torch.float64), phi, out=self.col_y)
        gram[:, slot].copy_(col_s)
        gram[slot, :].copy_(col_s)
        gram[:, ys].copy_(self.col_y)
        gram[ys, :].copy_(self.col_y)
        gram[slot, slot] = ss
        gram[slot, ys] = sy_hat
        gram[ys, slot] = sy_hat
        gram[ys, ys] = yy_hat
        close_push(st, slot, cap)
        d, p = self.dots[b], self.p[b]  # this step's p = SY_new g: the slot's two entries change
        p[slot].copy_(d[3])
        torch.lerp(d[3], d[4], phi, out=p[ys])

    # ------------------------------------------------------------------ direction
    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def precondition_(self, phase: StepPhase, config: CurvatureConfig) -> None:
        """``g <- gamma g + SY_local^T (Wf p)`` for the blocks with pairs (no exchange: ``p`` was summed
        over the ranks at the step's start)."""
        for b in phase.with_pairs:
            st = self.small[b]
            apply_compact(self.rows[b][K.HISTORY], st[K.COMPACT], st[K.GAMMA], self.grads[b], self.p[b], self.c[b],
                          p_ready=True)

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def assemble_(self, flat: torch.Tensor, phase: StepPhase, config: CurvatureConfig,
                  records: list[PairRecord]) -> None:
        """The rescaling from replicated numbers (every rank gets the same factor), then the exchange
        of the rows' directions (DDP; nothing under FSDP2). Direction shares are not known here."""
        if phase.active:
            self._rescale(config, flat, phase.blocks, phase.with_pairs)
        self.distributor.all_gather(flat, self.layout)

    def _rescale(self, config: CurvatureConfig, flat: torch.Tensor, blocks: Sequence[int],
                 with_pairs: Sequence[int]) -> None:
        """``"global"`` divides by ``|d|``, ``"kl"`` multiplies by ``min(1, sqrt(kappa / g.d))``."""
        norm = config.direction_norm
        if norm == "none":
            return
        acc, t, u, gamma = self.acc64, self.t64, self.u64, self.gamma64
        acc.zero_()
        for b in blocks:
            t.copy_(self.gg[b])
            if b in with_pairs:
                st = self.small[b]
                gamma.copy_(st[K.GAMMA])
                self.c64.copy_(self.c[b])
                self.p64.copy_(self.p[b])
                torch.mv(self.c64.view(1, -1), self.p64, out=u)
                if norm == "global":  # |d|^2 = gamma^2 g.g + 2 gamma c.p + c^T Gram c
                    t.mul_(gamma).add_(u, alpha=2.0).mul_(gamma)
                    torch.mv(st[K.GRAM], self.c64, out=self.q64)
                    t.addmv_(self.c64.view(1, -1), self.q64)
                else:  # g.d = gamma g.g + p.c
                    t.mul_(gamma).add_(u)
            acc.add_(t)
        if norm == "global":
            acc.clamp_(min=0.0).sqrt_().clamp_(min=torch.finfo(torch.float64).tiny).reciprocal_()
        else:
            self.kl_clip64.fill_(config.kl_clip)
            kl_factor_(acc, self.kl_clip64)
        self.scale.copy_(acc)
        flat.mul_(self.scale)
