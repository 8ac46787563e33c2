"""The ring of damped curvature pairs of one block, and the inverse-Hessian product it defines."""

from __future__ import annotations

from typing import Any

import torch

from ..compact import apply_compact, compact_matrix, time_order, update_gram

#: History dtypes stored row-normalised (each row divided by its 2-norm, the norms kept in the
#: working dtype): float16's range (6e-5 .. 65504) cannot hold raw pairs of small steps or large
#: gradients, and unit rows keep every product inside it.
REDUCED_DTYPES = (torch.float16, torch.bfloat16)

# State keys of one block's ring (inside its entry of ``optimizer.state``).
HISTORY = "history"  # (2m, n) in the history dtype: rows 0..m-1 hold s, rows m..2m-1 hold y_hat
ROW_NORMS = "row_norms"  # (2m,) working dtype: the 2-norm of each row (reduced dtypes only; else ones)
GRAM = "gram"  # (2m, 2m) float64: SY SY^T of the unnormalised pairs
COMPACT = "compact"  # (2m, 2m) working dtype: Wf of mlbfgs.compact, whatever the history dtype
GAMMA = "gamma"  # () working dtype: s.y_hat / y_hat.y_hat of the newest pair (H0 = gamma I)
NUM_PAIRS = "num_pairs"  # int: pairs in the ring
HEAD = "head"  # int: slot the next pair goes to
STATE_KEYS = (HISTORY, ROW_NORMS, GRAM, COMPACT, GAMMA, NUM_PAIRS, HEAD)


class CurvatureHistory:
    """At most ``capacity`` pairs (s, y_hat) of one block, stored as one ``2m x n`` tensor.

    The tensors live in ``state`` (a dict inside ``optimizer.state``), so they are saved and loaded
    with the optimizer; this object adds the scratch buffers and the operations on them.

    - ``push(s, y, phi)`` stores ``s`` and ``y_hat = phi y + (1 - phi) s``, dropping the oldest
      pair when full, sets ``gamma = s.y_hat / y_hat.y_hat`` and refreshes the compact matrix.
      With a reduced history dtype it overwrites ``s`` and ``y`` (they are scratch there).
    - ``apply_(g)`` replaces ``g`` by ``H g`` (:mod:`mlbfgs.compact`), allocating nothing.

    The Gram matrix is float64 and the compact matrix and gamma are in the working dtype (float32,
    or float64 for float64 parameters) whatever the history dtype: ``1 / (s.y)`` of a small step
    overflows float16.
    """

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state
        history = state[HISTORY]
        self.capacity = history.shape[0] // 2
        self.reduced = history.dtype in REDUCED_DTYPES
        work = state[COMPACT].dtype
        self._p = torch.empty(2 * self.capacity, dtype=work, device=history.device)
        self._c = torch.empty_like(self._p)
        self._reduced_buffers: tuple[torch.Tensor, ...] | None = None

    @staticmethod
    def new_state(
        numel: int, capacity: int, dtype: torch.dtype, device: torch.device, work_dtype: torch.dtype | None = None
    ) -> dict[str, Any]:
        """Empty ring of ``capacity`` pairs of ``numel`` elements; ``work_dtype`` defaults to float32
        (float64 when ``dtype`` is float64)."""
        work = work_dtype or (torch.float64 if dtype == torch.float64 else torch.float32)
        return {
            HISTORY: torch.zeros(2 * capacity, numel, dtype=dtype, device=device),
            ROW_NORMS: torch.ones(2 * capacity, dtype=work, device=device),
            GRAM: torch.zeros(2 * capacity, 2 * capacity, dtype=torch.float64, device=device),
            COMPACT: torch.zeros(2 * capacity, 2 * capacity, dtype=work, device=device),
            GAMMA: torch.ones((), dtype=work, device=device),
            NUM_PAIRS: 0,
            HEAD: 0,
        }

    @property
    def num_pairs(self) -> int:
        n: int = self.state[NUM_PAIRS]
        return n

    @property
    def gamma(self) -> float:
        """gamma as a Python float (a host sync; the step uses the tensor)."""
        return float(self.state[GAMMA])

    def order(self) -> list[int]:
        return time_order(self.state[NUM_PAIRS], self.state[HEAD], self.capacity)

    def push(self, s: torch.Tensor, y: torch.Tensor, phi: float) -> None:
        st = self.state
        history, slot, cap = st[HISTORY], st[HEAD], self.capacity
        if self.reduced:
            y.lerp_(s, 1.0 - phi)  # y_hat = phi y + (1 - phi) s, in y's storage
            norms = st[ROW_NORMS]
            tiny = torch.finfo(norms.dtype).tiny
            for row, v in ((slot, s), (cap + slot, y)):  # |v| = a |v / a|, a = max |v_i|: no overflow
                a = torch.linalg.vector_norm(v, ord=float("inf")).clamp_(min=tiny)
                v.div_(a)
                torch.linalg.vector_norm(v, out=norms[row])
                v.div_(norms[row].clamp(min=tiny))
                norms[row].mul_(a)
                history[row].copy_(v)
            update_gram(history, st[GRAM], slot, norms)
        else:
            history[slot].copy_(s)
            # y_hat = phi y + (1 - phi) s = s + phi (y - s)
            torch.lerp(s, y, phi, out=history[cap + slot])
            update_gram(history, st[GRAM], slot)
        close_push(st, slot, cap)

    def apply_(self, g: torch.Tensor) -> None:
        """``g <- H g`` in place, allocating nothing."""
        st = self.state
        if self.reduced:
            self._apply_reduced(g)
        else:
            apply_compact(st[HISTORY], st[COMPACT], st[GAMMA], g, self._p, self._c)

    def add_quadratic_(self, out: torch.Tensor) -> None:
        """``out += p^T Wf p`` of the last :meth:`apply_`, so that ``g.Hg = gamma g.g + p^T Wf p``."""
        out.addmv_(self._p.view(1, -1), self._c)

    def _apply_reduced(self, g: torch.Tensor) -> None:
        # Unit rows u_i = r_i / |r_i| in the reduced dtype. With a = max_j |g_j|:
        #   p_i = |r_i| a (u_i . g/a),  c = Wf p,  H g = gamma g + sum_i u_i (|r_i| c_i)
        # The products run on unit rows and vectors with entries <= 1 (g / a, and r c / b with
        # b = max_i |r_i c_i|), so they stay far inside float16's range (|u . g/a| <= sqrt(n));
        # the scales are applied in the working dtype.
        st = self.state
        history, norms = st[HISTORY], st[ROW_NORMS]
        if self._reduced_buffers is None:
            work = self._p.dtype
            self._reduced_buffers = (
                torch.empty_like(g, dtype=history.dtype),  # g / a, then the back product, reduced
                torch.empty_like(g, dtype=work),  # the back product in the working dtype
                torch.empty(2 * self.capacity, dtype=history.dtype, device=g.device),
                torch.empty((), dtype=work, device=g.device),
                torch.empty(2 * self.capacity, dtype=work, device=g.device),
            )
        g_low, back, small_low, scale, rc = self._reduced_buffers
        tiny = torch.finfo(scale.dtype).tiny
        torch.linalg.vector_norm(g, ord=float("inf"), out=scale)
        scale.clamp_(min=tiny)
        torch.div(g, scale, out=back)
        g_low.copy_(back)
        torch.mv(history, g_low, out=small_low)
        self._p.copy_(small_low).mul_(norms).mul_(scale)  # p = SY g
        torch.mv(st[COMPACT], self._p, out=self._c)  # c = Wf p
        torch.mul(self._c, norms, out=rc)
        torch.linalg.vector_norm(rc, ord=float("inf"), out=scale)
        scale.clamp_(min=tiny)
        small_low.copy_(rc.div_(scale))
        torch.mv(history.t(), small_low, out=g_low)
        back.copy_(g_low).mul_(scale)
        g.mul_(st[GAMMA]).add_(back)


def close_push(state: dict[str, Any], slot: int, capacity: int) -> None:
    """After a pair's rows and Gram entries are written to ``slot`` (whole blocks here, rows in
    :mod:`mlbfgs.curvature.rows`): advance the ring, set ``gamma = s.y_hat / y_hat.y_hat`` of the new
    pair from the Gram matrix and rebuild ``Wf`` (:mod:`mlbfgs.compact`)."""
    state[HEAD] = (slot + 1) % capacity
    state[NUM_PAIRS] = min(state[NUM_PAIRS] + 1, capacity)
    gram = state[GRAM]
    gamma = float(gram[slot, capacity + slot] / gram[capacity + slot, capacity + slot])
    state[GAMMA].fill_(gamma)
    compact_matrix(gram, time_order(state[NUM_PAIRS], state[HEAD], capacity), gamma, state[COMPACT])
