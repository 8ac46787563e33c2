"""The ring of damped curvature pairs of one block, and the inverse-Hessian product it defines."""

from __future__ import annotations

import torch

from .compact import apply_compact, compact_matrix, time_order, update_gram


class CurvatureHistory:
    """At most ``capacity`` pairs (s, y_hat) of one block, stored as one ``2m x n`` tensor.

    The tensors live in ``state`` (a dict inside ``optimizer.state``), so they are saved and loaded
    with the optimizer; this object adds the scratch buffers and the operations on them.

    - ``push(s, y, phi)`` stores ``s`` and ``y_hat = phi y + (1 - phi) s``, dropping the oldest
      pair when full, sets ``gamma = s.y_hat / y_hat.y_hat`` and refreshes the compact matrix.
    - ``apply_(g)`` replaces ``g`` by ``H g`` (:mod:`mlbfgs.compact`).
    """

    def __init__(self, state: dict) -> None:
        self.state = state
        history = state["history"]
        self.capacity = history.shape[0] // 2
        self._p = torch.empty(2 * self.capacity, dtype=history.dtype, device=history.device)
        self._c = torch.empty_like(self._p)
        self._low_precision = None

    @staticmethod
    def new_state(numel: int, capacity: int, dtype: torch.dtype, device: torch.device) -> dict:
        return {
            "history": torch.zeros(2 * capacity, numel, dtype=dtype, device=device),
            "gram": torch.zeros(2 * capacity, 2 * capacity, dtype=torch.float64, device=device),
            "wf": torch.zeros(2 * capacity, 2 * capacity, dtype=dtype, device=device),
            "gamma": 1.0,
            "num_pairs": 0,
            "head": 0,
        }

    @property
    def num_pairs(self) -> int:
        return self.state["num_pairs"]

    @property
    def gamma(self) -> float:
        return self.state["gamma"]

    def order(self) -> list[int]:
        return time_order(self.state["num_pairs"], self.state["head"], self.capacity)

    def push(self, s: torch.Tensor, y: torch.Tensor, phi: float) -> None:
        st = self.state
        history, slot = st["history"], st["head"]
        history[slot].copy_(s)
        # y_hat = phi y + (1 - phi) s = s + phi (y - s)
        if history.dtype == s.dtype:
            torch.lerp(s, y, phi, out=history[self.capacity + slot])
        else:
            history[self.capacity + slot].copy_(torch.lerp(s, y, phi))
        update_gram(history, st["gram"], slot)
        st["head"] = (slot + 1) % self.capacity
        st["num_pairs"] = min(st["num_pairs"] + 1, self.capacity)
        gram = st["gram"]
        sy, yy = gram[slot, self.capacity + slot], gram[self.capacity + slot, self.capacity + slot]
        st["gamma"] = float(sy / yy)
        compact_matrix(gram, self.order(), st["gamma"], st["wf"])

    def apply_(self, g: torch.Tensor) -> None:
        """``g <- H g`` in place, allocating nothing."""
        history, wf = self.state["history"], self.state["wf"]
        if history.dtype == g.dtype:
            apply_compact(history, wf, self.gamma, g, self._p, self._c)
        else:
            self._apply_low_precision(history, wf, g)

    def add_quadratic_(self, out: torch.Tensor) -> None:
        """``out += p^T Wf p`` of the last :meth:`apply_`, so that ``g.Hg = gamma g.g + p^T Wf p``."""
        if self._low_precision is None:
            out.addmv_(self._p.view(1, -1), self._c)
        else:
            _, _, p32, c32 = self._low_precision
            p32.copy_(self._p)
            c32.copy_(self._c)
            out.addmv_(p32.view(1, -1), c32)

    def _apply_low_precision(self, history: torch.Tensor, wf: torch.Tensor, g: torch.Tensor) -> None:
        # History in bf16/fp16 halves the bytes read; the products run in that dtype and g stays in
        # its own dtype. Mixed-dtype arithmetic would allocate casts, so results are copied first.
        if self._low_precision is None:
            self._low_precision = (
                torch.empty_like(g, dtype=history.dtype),
                torch.empty_like(g),
                torch.empty(self._p.shape, dtype=g.dtype, device=g.device),
                torch.empty(self._c.shape, dtype=g.dtype, device=g.device),
            )
        g_low, out, _, _ = self._low_precision
        g_low.copy_(g)
        torch.mv(history, g_low, out=self._p)
        torch.mv(wf, self._p, out=self._c)
        torch.mv(history.t(), self._c, out=g_low)
        out.copy_(g_low)
        torch.add(out, g, alpha=self.gamma, out=g)
