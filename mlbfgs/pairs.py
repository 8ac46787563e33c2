"""Forming and accepting one curvature pair (s, y) of a block, as in mL-BFGS (Niu et al. 2023, Sec. 3).

Every T steps a block forms

    s = P - P0,    y = G - G0

from its parameter average ``P`` and gradient average ``G`` and their values ``P0``, ``G0`` at the
previous pair (the anchors). With pair momentum ``xi > 0`` the pair is smoothed once more against the
previous raw pair, ``s <- (1 - xi) s + xi s_prev`` (likewise ``y``), from the second pair on. (The
authors' code, yuehniu/mL-BFGS opt/slimblock.py, mixes the previous *damped* y; see
``baselines/mlbfgs_authors.py``.)

A pair enters the ring only after damping (:mod:`mlbfgs.damping`) leaves it positive definite:
``s.y_hat > min_curvature`` and ``|y_hat|^2 > 0``, all finite.

Whole blocks and row-sharded blocks (:mod:`mlbfgs.curvature`) both go through these two functions;
the row-sharded one passes dots summed over its ranks. :class:`PairRecord` is what a step reports of
each pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .config import CurvatureConfig
from .damping import damped_curvature, damping_factor


@dataclass(frozen=True)
class PairRecord:
    """A pair formed in the last step, with the block's diagnostics at that step.

    ``mu = s.y / s.s`` before damping and whether the pair was kept; ``damped_mu = s.y_hat / s.s`` and
    ``gamma = s.y_hat / y_hat.y_hat`` (the block's new initial scaling) of a kept pair; ``grad_norm``, the
    block's ``|g_b|`` (weight decay included) and ``direction_share``, its share ``|d_b|^2 / |d|^2`` of the
    whole direction before the rescaling (the global rescaling keeps shares, so it is the block's share
    of the step). NaN where the pair was rejected, and the two last under row sharding (diagnostics of
    whole blocks only).
    """

    block: int
    mu: float
    accepted: bool
    damped_mu: float = math.nan
    gamma: float = math.nan
    grad_norm: float = math.nan
    direction_share: float = math.nan


def difference_pair_(s: torch.Tensor, y: torch.Tensor, param_avg: torch.Tensor, grad_avg: torch.Tensor,
                     s_prev: torch.Tensor | None, y_prev: torch.Tensor | None, pair_momentum: float,
                     pairs_formed: int) -> None:
    """In place, all tensors of one shape (a block's ``n`` elements, or this rank's rows of it).

    On entry ``s`` and ``y`` hold the anchors ``P0`` and ``G0``; on return the pair ``s = P - P0``,
    ``y = G - G0``, smoothed with ``s_prev``/``y_prev`` when ``pair_momentum > 0`` and
    ``pairs_formed > 0`` (the pairs this block formed before). ``s_prev``/``y_prev`` then hold the
    new pair (unused, and may be None, when ``pair_momentum == 0``).
    """
    torch.sub(param_avg, s, out=s)
    torch.sub(grad_avg, y, out=y)
    if pair_momentum > 0:
        assert s_prev is not None and y_prev is not None, "pair momentum needs the previous pair's buffers"
        if pairs_formed > 0:
            s.lerp_(s_prev, pair_momentum)
            y.lerp_(y_prev, pair_momentum)
        s_prev.copy_(s)
        y_prev.copy_(y)


def accept_pair(sy: float, ss: float, yy: float, config: CurvatureConfig) -> tuple[float, float, float] | None:
    """``(phi, s.y_hat, y_hat.y_hat)`` of a pair with inner products ``s.y``, ``s.s``, ``y.y``, or None
    when it is rejected (a non-finite or zero ``s``, or damping leaves ``s.y_hat <= min_curvature``).

    ``y_hat = phi y + (1 - phi) s``, so ``y_hat.y_hat = phi^2 y.y + 2 phi (1 - phi) s.y + (1 - phi)^2 s.s``.
    """
    if not (math.isfinite(sy) and math.isfinite(ss) and math.isfinite(yy) and ss > 0):
        return None
    lo, hi = config.curvature_bounds
    phi = damping_factor(sy, ss, lo, hi, config.damping)
    sy_hat = damped_curvature(sy, ss, phi)
    yy_hat = phi * phi * yy + 2 * phi * (1 - phi) * sy + (1 - phi) ** 2 * ss
    if sy_hat > config.min_curvature and yy_hat > 0 and math.isfinite(yy_hat):
        return phi, sy_hat, yy_hat
    return None
