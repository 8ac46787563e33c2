"""L-BFGS building blocks on flat vectors, shared by oLBFGS and SQN (their two-loop recursion is
:func:`mlbfgs.compact.two_loop_`, the library's).

H_k, the BFGS inverse-Hessian update applied k times to H_0 = gamma I, for the dense reference:

    H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T.

Everything stays on the device: the coefficients are 0-dim tensors, no host synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def dense_inverse_hessian(
    s: Sequence[torch.Tensor], y: Sequence[torch.Tensor], gamma: float, n: int, dtype=torch.float64
) -> torch.Tensor:
    """The explicit n x n BFGS inverse-Hessian matrix (reference for tests; O(n^2) memory)."""
    h = gamma * torch.eye(n, dtype=dtype)
    eye = torch.eye(n, dtype=dtype)
    for s_i, y_i in zip(s, y, strict=True):
        s_i, y_i = s_i.to(dtype), y_i.to(dtype)
        rho = 1.0 / torch.dot(s_i, y_i)
        left = eye - rho * torch.outer(s_i, y_i)
        h = left @ h @ left.T + rho * torch.outer(s_i, s_i)
    return h


class PairRing:
    """A ring of at most ``m`` curvature pairs of flat length ``n``, preallocated.

    Holds S, Y (m x n), s.y and y.y per slot. :meth:`ordered` returns views oldest first.
    """

    def __init__(self, m: int, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.m = m
        self.s = torch.zeros(m, n, dtype=dtype, device=device)
        self.y = torch.zeros(m, n, dtype=dtype, device=device)
        self.sy = torch.zeros(m, dtype=dtype, device=device)
        self.yy = torch.zeros(m, dtype=dtype, device=device)
        self.count = 0  # pairs held (<= m)
        self.next = 0  # slot the next pair goes to

    def __len__(self) -> int:
        return self.count

    def extend(self, n: int) -> None:
        """Grow the pairs to ``n`` elements, with zeros in the new coordinates (still valid pairs:
        s.y and y.y are unchanged, and H is the initial matrix on the new coordinates)."""
        old = self.s.shape[1]
        for key in ("s", "y"):
            grown = torch.zeros(self.m, n, dtype=self.s.dtype, device=self.s.device)
            grown[:, :old].copy_(getattr(self, key))
            setattr(self, key, grown)

    def relayout(self, n: int, moves: Sequence[tuple[slice, slice]], dtype: torch.dtype,
                 device: torch.device) -> None:
        """Re-lay the pairs for a new flat layout of ``n`` elements in ``dtype`` on ``device``: each
        ``(new, old)`` run of ``moves`` keeps its coordinates, the others are zero. Valid pairs stay
        valid when coordinates are only added or reordered (s.y and y.y are unchanged); a cast is the
        one ``load_state_dict`` would do."""
        for key in ("s", "y"):
            old = getattr(self, key)
            grown = torch.zeros(self.m, n, dtype=dtype, device=device)
            for dst, src in moves:
                grown[:, dst].copy_(old[:, src])
            setattr(self, key, grown)
        self.sy = self.sy.to(dtype=dtype, device=device)
        self.yy = self.yy.to(dtype=dtype, device=device)

    def reset(self) -> None:
        """Empty, as a new ring (in place: nothing is allocated)."""
        for t in (self.s, self.y, self.sy, self.yy):
            t.zero_()
        self.count = 0
        self.next = 0

    def push(self, s: torch.Tensor, y: torch.Tensor, sy: torch.Tensor, yy: torch.Tensor) -> None:
        i = self.next
        self.s[i].copy_(s)
        self.y[i].copy_(y)
        self.sy[i] = sy
        self.yy[i] = yy
        self.next = (i + 1) % self.m
        self.count = min(self.count + 1, self.m)

    def order(self) -> list[int]:
        start = (self.next - self.count) % self.m
        return [(start + j) % self.m for j in range(self.count)]

    def ordered(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        idx = self.order()
        rho = 1.0 / self.sy
        return [self.s[i] for i in idx], [self.y[i] for i in idx], [rho[i] for i in idx]

    def newest_gamma(self) -> torch.Tensor:
        """``s.y / y.y`` of the newest pair (the usual H_0 scaling)."""
        i = (self.next - 1) % self.m
        return self.sy[i] / self.yy[i]

    def mean_gamma(self) -> torch.Tensor:
        """Mean of ``s_i.y_i / y_i.y_i`` over the held pairs (Schraudolph et al.'s H_0 scaling)."""
        idx = self.order()
        return (self.sy[idx] / self.yy[idx]).mean()

    def state_dict(self) -> dict:
        return {"s": self.s, "y": self.y, "sy": self.sy, "yy": self.yy, "count": self.count, "next": self.next}

    def load_state_dict(self, state: dict) -> None:
        for key in ("s", "y", "sy", "yy"):
            getattr(self, key).copy_(state[key])
        self.count = int(state["count"])
        self.next = int(state["next"])
