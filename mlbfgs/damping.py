"""Damping of a curvature pair (s, y), as in mL-BFGS (Niu et al. 2023, Sec. 3).

The curvature ratio of a pair is ``mu = s.y / s.s``. Damping replaces ``y`` by

    y_hat = phi * y + (1 - phi) * s

with ``phi`` chosen so that ``mu_hat = s.y_hat / s.s = phi * mu + (1 - phi)`` lies in
``[sigma_L, sigma_H]``:

    phi = (1 - sigma_L) / (1 - mu)   if mu < sigma_L
    phi = (sigma_H - 1) / (mu - 1)   if mu > sigma_H
    phi = 1                          otherwise
    phi = min(phi, 1 - tau0)

``tau0`` always mixes in at least ``tau0`` of ``s`` (which only pulls mu_hat towards 1, so the bounds
still hold because ``sigma_L <= 1 <= sigma_H``).
"""

from __future__ import annotations


def damping_factor(sy: float, ss: float, sigma_low: float, sigma_high: float, tau0: float) -> float:
    """Return ``phi`` for a pair with ``s.y = sy`` and ``s.s = ss`` (``ss > 0``)."""
    mu = sy / ss
    if mu < sigma_low:
        phi = (1.0 - sigma_low) / (1.0 - mu)
    elif mu > sigma_high:
        phi = (sigma_high - 1.0) / (mu - 1.0)
    else:
        phi = 1.0
    return min(phi, 1.0 - tau0)


def damped_curvature(sy: float, ss: float, phi: float) -> float:
    """``s.y_hat`` for ``y_hat = phi y + (1 - phi) s``."""
    return phi * sy + (1.0 - phi) * ss
