"""The dense float64 reference the quasi-Newton tests compare with, computed from the spec's formulas by hand
(``shared/spec/mlbfgs.md``), never from the library's code."""

from __future__ import annotations

import torch

TAU0, LO, HI = 0.01, 0.01, 1.5  # the default damping tau0 and curvature bounds (sigma_L, sigma_H)


def damping_phi(mu: float, tau0: float = TAU0, lo: float = LO, hi: float = HI) -> float:
    """phi of the spec's damping rule (step 3) for a pair with ``mu = s.y / s.s``, with phi <= 1 - tau0."""
    if mu < lo:
        phi = (1 - lo) / (1 - mu)
    elif mu > hi:
        phi = (hi - 1) / (mu - 1)
    else:
        phi = 1.0
    return min(phi, 1 - tau0)


def one_pair_inverse_hessian(s: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """The BFGS update of ``gamma I`` by one pair, ``gamma = s.y / y.y``: ``(I - rho s y^T) gamma I (I - rho y s^T)
    + rho s s^T`` with ``rho = 1 / s.y``, as a dense matrix."""
    rho = 1.0 / float(s @ y_hat)
    gamma = float(s @ y_hat) / float(y_hat @ y_hat)
    eye = torch.eye(s.numel(), dtype=s.dtype)
    h = (eye - rho * torch.outer(s, y_hat)) @ (gamma * eye) @ (eye - rho * torch.outer(y_hat, s))
    return h + rho * torch.outer(s, s)
