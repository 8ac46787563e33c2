r"""The curvature phases of mL-BFGS on row-sharded blocks (FSDP2, or DDP with ``shard="rows"``), with one
all-reduce per step (where the rows come from: :mod:`mlbfgs.row_sharding`).

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
(:func:`mlbfgs.row_sharding.resolve_row_sharding` refuses them): the rows would be normalised by
global norms and the Gram matrix, built from unrounded dots, would not match the rounded rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from . import state_keys as K
from .compact import compact_matrix, time_order
from .config import CurvatureConfig
from .pairs import accept_pair, difference_pair_

#: per block in the pair all-reduce: s.y, s.s, y.y, s.g, y.g, then SY_old s (2m) and SY_old y (2m)
_PAIR_DOTS = 5


class RowShardedCurvature:
    """The buffers and phases of one step signature (which blocks have gradients).

    Args:
        config: the curvature settings (read at every step, so a replaced config takes effect).
        small: per block, the replicated state (``GRAM``, ``COMPACT``, ``GAMMA``, ``NUM_PAIRS``,
            ``HEAD`` and the pair counters), as stored in ``optimizer.state``.
        rows: per block, the rank's rows: ``PARAM_AVG``, ``GRAD_AVG``, anchors (and ``S_PREV``,
            ``Y_PREV``) flat ``n_local`` vectors in the working dtype, ``HISTORY`` ``2m x n_local``.
        grads: per block, the rank's rows of this step's gradient (a view of the step's flat buffer).
        reduce: sums a tensor over the ranks in place (:meth:`mlbfgs.row_sharding.RowSharding.all_reduce_`).
    """

    def __init__(self, config: CurvatureConfig, small: dict[int, dict[str, Any]], rows: dict[int, dict[str, Any]],
                 grads: dict[int, torch.Tensor], reduce: Any) -> None:
        self.small, self.rows, self.grads, self.reduce = small, rows, grads, reduce
        blocks = sorted(small)
        m = config.history_size
        some = rows[blocks[0]][K.HISTORY]
        work, device = some.dtype, some.device
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
    def reduce_step(self, flat: torch.Tensor, blocks: Sequence[int], with_pairs: Sequence[int],
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
    def form_pairs(self, config: CurvatureConfig, blocks: Sequence[int]) -> list[tuple[int, float, bool]]:
        """Phase 3 on the rank's rows: ``s, y`` per block with gradients, their dots summed in one
        all-reduce and one host sync, then the same decision and update on every rank. Returns
        ``(block, mu, accepted)`` per pair formed."""
        for b in blocks:
            st, rw = self.small[b], self.rows[b]
            s, y = rw[K.PARAM_ANCHOR], rw[K.GRAD_ANCHOR]  # the pair is formed in the anchors' storage
            difference_pair_(s, y, rw[K.PARAM_AVG], rw[K.GRAD_AVG], rw.get(K.S_PREV), rw.get(K.Y_PREV),
                             config.pair_momentum, st[K.PAIRS_FORMED])
            st[K.PAIRS_FORMED] += 1
            d, g, history = self.dots[b], self.grads[b], rw[K.HISTORY]
            torch.dot(s, y, out=d[0])
            torch.dot(s, s, out=d[1])
            torch.dot(y, y, out=d[2])
            torch.dot(s, g, out=d[3])
            torch.dot(y, g, out=d[4])
            torch.mv(history, s, out=self.sy_s[b])
            torch.mv(history, y, out=self.sy_y[b])
        self.reduce(self.pair_buf)
        values = self.pair_buf.tolist()
        records = []
        for b in blocks:
            o = self._pair_offsets[b]
            sy, ss, yy = values[o], values[o + 1], values[o + 2]
            mu = sy / ss if ss > 0 else float("nan")
            damped = accept_pair(sy, ss, yy, config)
            if damped is not None:
                phi, sy_hat, yy_hat = damped
                self._push(b, phi, ss, sy_hat, yy_hat)
            accepted = damped is not None
            st, rw = self.small[b], self.rows[b]
            st[K.PAIRS_ACCEPTED if accepted else K.PAIRS_REJECTED] += 1
            records.append((b, mu, accepted))
            rw[K.PARAM_ANCHOR].copy_(rw[K.PARAM_AVG])
            rw[K.GRAD_ANCHOR].copy_(rw[K.GRAD_AVG])
        return records

    def _push(self, b: int, phi: float, ss: float, sy_hat: float, yy_hat: float) -> None:
        """Store the pair's rows in the ring's next slot; the Gram rows, gamma, ``Wf`` and this step's
        ``p`` follow from the reduced dots (identical on every rank)."""
        st, rw = self.small[b], self.rows[b]
        s, y, history = rw[K.PARAM_ANCHOR], rw[K.GRAD_ANCHOR], rw[K.HISTORY]
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
        st[K.HEAD] = (slot + 1) % cap
        st[K.NUM_PAIRS] = min(st[K.NUM_PAIRS] + 1, cap)
        gamma = sy_hat / yy_hat
        st[K.GAMMA].fill_(gamma)
        compact_matrix(gram, time_order(st[K.NUM_PAIRS], st[K.HEAD], cap), gamma, st[K.COMPACT])
        d, p = self.dots[b], self.p[b]  # this step's p = SY_new g: the slot's two entries change
        p[slot].copy_(d[3])
        torch.lerp(d[3], d[4], phi, out=p[ys])

    # ------------------------------------------------------------------ direction
    def precondition(self, with_pairs: Sequence[int]) -> None:
        """Phase 4: ``g <- gamma g + SY_local^T (Wf p)`` for the blocks with pairs (no exchange)."""
        for b in with_pairs:
            st = self.small[b]
            torch.mv(st[K.COMPACT], self.p[b], out=self.c[b])
            self.grads[b].mul_(st[K.GAMMA]).addmv_(self.rows[b][K.HISTORY].t(), self.c[b])

    def rescale(self, config: CurvatureConfig, flat: torch.Tensor, blocks: Sequence[int],
                with_pairs: Sequence[int]) -> None:
        """Phase 6 from replicated numbers only: ``"global"`` divides by ``|d|``, ``"kl"`` multiplies by
        ``min(1, sqrt(kappa / g.d))``; every rank gets the same factor."""
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
        else:  # nu = min(1, sqrt(kappa / g.d)); nu = 1 when g.d <= 0
            self.kl_clip64.fill_(config.kl_clip)
            acc.clamp_(min=1e-30).reciprocal_().mul_(self.kl_clip64).sqrt_().clamp_(max=1.0)
        self.scale.copy_(acc)
        flat.mul_(self.scale)
