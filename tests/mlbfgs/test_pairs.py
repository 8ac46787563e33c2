"""Pair formation and acceptance (mlbfgs.pairs) against explicit float64 computations."""

import math

import pytest
import torch

from mlbfgs import CurvatureConfig
from mlbfgs.pairs import accept_pair, difference_pair_

CFG = CurvatureConfig(curvature_bounds=(0.01, 1.5), damping=0.01, min_curvature=1e-12)


@pytest.mark.parametrize("scale", [-3.0, 0.005, 0.5, 1.0, 4.0])  # mu below, at, inside and above the bounds
def test_accepted_pair_matches_the_explicit_damped_y(scale) -> None:
    torch.manual_seed(1)
    s = torch.randn(50, dtype=torch.float64)
    y = scale * s + 0.1 * torch.randn(50, dtype=torch.float64)
    out = accept_pair(float(s @ y), float(s @ s), float(y @ y), CFG)
    assert out is not None
    phi, sy_hat, yy_hat = out
    y_hat = phi * y + (1 - phi) * s
    mu_hat = float(s @ y_hat) / float(s @ s)
    assert CFG.curvature_bounds[0] - 1e-12 <= mu_hat <= CFG.curvature_bounds[1] + 1e-12
    assert phi <= 1 - CFG.damping
    assert sy_hat == pytest.approx(float(s @ y_hat), rel=1e-12)
    assert yy_hat == pytest.approx(float(y_hat @ y_hat), rel=1e-12)


@pytest.mark.parametrize("sy, ss, yy", [
    (math.nan, 1.0, 1.0), (1.0, math.inf, 1.0), (1.0, 1.0, math.nan),  # not finite
    (0.0, 0.0, 1.0),  # s = 0
    (1e-15, 1e-14, 1e-14),  # damped s.y_hat below min_curvature
])
def test_rejected_pairs(sy, ss, yy) -> None:
    assert accept_pair(sy, ss, yy, CFG) is None


def test_difference_pair_with_momentum() -> None:
    torch.manual_seed(2)
    p0, g0, p, g, s_prev, y_prev = (torch.randn(7, dtype=torch.float64) for _ in range(6))
    xi = 0.3
    s, y, sp, yp = p0.clone(), g0.clone(), s_prev.clone(), y_prev.clone()
    difference_pair_(s, y, p, g, sp, yp, xi, pairs_formed=2)
    torch.testing.assert_close(s, (1 - xi) * (p - p0) + xi * s_prev, rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(y, (1 - xi) * (g - g0) + xi * y_prev, rtol=1e-14, atol=1e-14)
    assert torch.equal(sp, s) and torch.equal(yp, y)  # the next pair mixes with this one

    s, y, sp, yp = p0.clone(), g0.clone(), s_prev.clone(), y_prev.clone()
    difference_pair_(s, y, p, g, sp, yp, xi, pairs_formed=0)  # the first pair: nothing to mix with
    assert torch.equal(s, p - p0) and torch.equal(y, g - g0)
    assert torch.equal(sp, s) and torch.equal(yp, y)

    s, y = p0.clone(), g0.clone()
    difference_pair_(s, y, p, g, None, None, 0.0, pairs_formed=5)  # xi = 0: no previous pair is kept
    assert torch.equal(s, p - p0) and torch.equal(y, g - g0)
