"""Inverse-Hessian products from a ring of curvature pairs: the compact representation.

With the pairs in time order, ``S = [s_1..s_k]``, ``Y = [y_1..y_k]`` (columns), ``H0 = gamma I``,
Byrd, Nocedal & Schnabel (1994, Thm 2.2) write the L-BFGS inverse Hessian as

    H = gamma I + [S  gamma Y] [[R^-T (D + gamma Y^T Y) R^-1,  -R^-T],
                                [-R^-1,                          0  ]] [S^T ; Y^T]

with ``R = triu(S^T Y)`` and ``D = diag(s_i . y_i)``. Writing ``p = [S^T g ; Y^T g]`` this is

    H g = gamma g + [S  Y] Wf p,    Wf = [[R^-T (D + gamma Y^T Y) R^-1,  -gamma R^-T],
                                          [-gamma R^-1,                   0         ]]

so one step costs two matrix-vector products with the stacked history ``SY = [S^T ; Y^T]``
(``2m x n``, one contiguous tensor) and one ``2m x 2m`` product. ``Wf`` changes only when a pair is
added, so it is rebuilt then (from the Gram matrix ``SY SY^T``, kept up to date one row at a time)
and reused in between.

The ring stores pair ``i`` in slot ``i mod capacity``: row ``slot`` of ``SY`` holds ``s``, row
``capacity + slot`` holds ``y``. ``Wf`` is kept in slot order with zeros for empty slots, so the
product needs no reordering of the history.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def time_order(num_pairs: int, head: int, capacity: int) -> list[int]:
    """Slots from oldest to newest pair; ``head`` is the slot the next pair will be written to."""
    if num_pairs < capacity:
        return list(range(num_pairs))
    return [(head + i) % capacity for i in range(capacity)]


def update_gram(
    history: torch.Tensor, gram: torch.Tensor, slot: int, row_norms: torch.Tensor | None = None
) -> None:
    """Refresh the rows and columns of ``gram = SY SY^T`` that involve ``slot``.

    ``history`` is the ``2m x n`` stacked ring, ``gram`` a ``2m x 2m`` float64 matrix. Reads the
    history once (a ``2m x 2`` product). With ``row_norms`` the stored rows are unit vectors and
    row ``i`` of ``SY`` is ``row_norms[i] * history[i]``.
    """
    capacity = history.shape[0] // 2
    rows = (slot, capacity + slot)
    cols = torch.mm(history, history[list(rows)].t()).to(gram.dtype)
    if row_norms is not None:
        norms = row_norms.to(gram.dtype)
        cols.mul_(norms.unsqueeze(1)).mul_(norms[list(rows)].unsqueeze(0))
    for j, r in enumerate(rows):
        gram[:, r] = cols[:, j]
        gram[r, :] = cols[:, j]


def compact_matrix(gram: torch.Tensor, order: list[int], gamma: float, out: torch.Tensor) -> None:
    """Write ``Wf`` (module docstring) for the pairs in ``order`` into ``out`` (slot order)."""
    capacity = gram.shape[0] // 2
    s_idx = torch.tensor(order, dtype=torch.long, device=gram.device)
    y_idx = s_idx + capacity
    sty = gram[s_idx][:, y_idx]
    yty = gram[y_idx][:, y_idx]
    r = torch.triu(sty)
    eye = torch.eye(len(order), dtype=gram.dtype, device=gram.device)
    r_inv = torch.linalg.solve_triangular(r, eye, upper=True)
    w11 = r_inv.t() @ (torch.diag(torch.diagonal(sty)) + gamma * yty) @ r_inv
    w = torch.zeros_like(gram)
    w[s_idx.unsqueeze(1), s_idx] = w11
    w[s_idx.unsqueeze(1), y_idx] = -gamma * r_inv.t()
    w[y_idx.unsqueeze(1), s_idx] = -gamma * r_inv
    out.copy_(w)


def apply_compact(
    history: torch.Tensor,
    wf: torch.Tensor,
    gamma: torch.Tensor,
    g: torch.Tensor,
    p: torch.Tensor,
    c: torch.Tensor,
    p_ready: bool = False,
) -> None:
    """In place: ``g <- H g = gamma g + SY^T (Wf (SY g))``. ``p`` and ``c`` are ``2m`` buffers and
    ``gamma`` a 0-dim tensor (a Python float would be a constant to ``torch.compile``). With ``p_ready``,
    ``p`` holds ``SY g`` already (``history`` is one rank's rows and ``p`` was summed over the ranks).

    Allocates nothing: every product writes into a given buffer.
    """
    if not p_ready:
        torch.mv(history, g, out=p)
    torch.mv(wf, p, out=c)
    g.mul_(gamma).addmv_(history.t(), c)


def two_loop_(
    g: torch.Tensor,
    s: Sequence[torch.Tensor],
    y: Sequence[torch.Tensor],
    rho: Sequence[torch.Tensor],
    gamma: torch.Tensor | float,
    alpha: torch.Tensor | None = None,
    tmp: torch.Tensor | None = None,
) -> torch.Tensor:
    """In place: ``g <- H g`` by the two-loop recursion (Nocedal 1980) for the pairs ``(s[i], y[i])``,
    oldest first, ``rho[i] = 1 / (s_i . y_i)`` and ``H_0 = gamma I``; returns ``g``::

        q <- g
        for i = k..1:  a_i <- rho_i s_i . q;  q <- q - a_i y_i
        r <- gamma q
        for i = 1..k:  b <- rho_i y_i . r;    r <- r + (a_i - b) s_i

    ``alpha`` (``k`` elements) and ``tmp`` (a scalar) are scratch; given, nothing is allocated. The
    same ``H`` as :func:`apply_compact`; the quasi-Newton baselines (oLBFGS, SQN) use it directly.
    """
    if alpha is None:
        alpha = g.new_empty(len(s))
    if tmp is None:
        tmp = g.new_empty(())
    for i in reversed(range(len(s))):
        torch.dot(s[i], g, out=alpha[i])
        alpha[i].mul_(rho[i])
        g.addcmul_(y[i], alpha[i], value=-1.0)
    g.mul_(gamma)
    for i in range(len(s)):
        torch.dot(y[i], g, out=tmp)
        tmp.mul_(rho[i]).neg_().add_(alpha[i])  # alpha_i - beta_i
        g.addcmul_(s[i], tmp)
    return g


def apply_two_loop(
    history: torch.Tensor,
    order: list[int],
    gamma: float,
    g: torch.Tensor,
    rho: torch.Tensor,
    alpha: torch.Tensor,
    tmp: torch.Tensor,
) -> None:
    """In place: ``g <- H g`` of a ring (:func:`two_loop_` over its rows in time ``order``).

    ``rho[slot] = 1 / (s.y)``; ``alpha`` a ``capacity`` buffer and ``tmp`` a scalar buffer. Same
    result as :func:`apply_compact`, but it reads ``g`` once per pair and loop; kept for the
    benchmark that chooses between the two and as an independent check.
    """
    capacity = history.shape[0] // 2
    two_loop_(g, [history[slot] for slot in order], [history[capacity + slot] for slot in order],
              [rho[slot] for slot in order], gamma, alpha.narrow(0, 0, len(order)), tmp)
