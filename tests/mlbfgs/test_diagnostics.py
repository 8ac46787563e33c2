"""Per-block diagnostics of ``MLBFGS.last_pairs`` against a dense float64 BFGS computation.

Two blocks of known, very different curvature: ``f = a_1 |x_1|^2 / 2 + a_2 |x_2|^2 / 2``. With
``beta = 0`` the averages are the iterates, so a pair is ``s = x_t - x_{t-1}``, ``y = A s`` exactly and
every number of a record follows from the spec's formulas by hand.
"""

from __future__ import annotations

import math

import torch

from mlbfgs import MLBFGS
from tests.support.dense_bfgs import HI, LO, TAU0, damping_phi, one_pair_inverse_hessian

A = (100.0, 0.5)  # curvature of block 0 (above sigma_H = 1.5) and block 1 (inside the bounds)


def test_records_match_a_dense_bfgs_computation() -> None:
    torch.manual_seed(0)
    x = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in (5, 3)]
    opt = MLBFGS(x, lr=0.05, momentum=0.0, beta=0.0, update_period=1, history_size=1, blocks=[[x[0]], [x[1]]],
                 damping=TAU0, curvature_bounds=(LO, HI), direction_norm="global")
    before = [[t.detach().clone() for t in x]]
    grads = []
    for _ in range(2):
        opt.zero_grad()
        loss = sum(0.5 * a * (t * t).sum() for a, t in zip(A, x))
        loss.backward()
        grads.append([t.grad.detach().clone() for t in x])
        opt.step()
        before.append([t.detach().clone() for t in x])
    records = {r.block: r for r in opt.last_pairs}  # step 2 formed the first pair of each block
    assert sorted(records) == [0, 1]
    directions = []
    for b, a in enumerate(A):
        s = before[1][b] - before[0][b]  # iterate at step 2 minus iterate at step 1
        y = a * s
        phi = damping_phi(a)
        y_hat = phi * y + (1 - phi) * s
        gamma = float(s @ y_hat) / float(y_hat @ y_hat)
        h = one_pair_inverse_hessian(s, y_hat)
        directions.append(h @ grads[1][b])
        r = records[b]
        assert r.accepted
        assert math.isclose(r.mu, a, rel_tol=1e-9)
        assert math.isclose(r.damped_mu, float(s @ y_hat) / float(s @ s), rel_tol=1e-9)
        assert math.isclose(r.gamma, gamma, rel_tol=1e-9)
        assert math.isclose(r.grad_norm, float(grads[1][b].norm()), rel_tol=1e-9)
    squares = [float(d @ d) for d in directions]
    for b in (0, 1):
        assert math.isclose(records[b].direction_share, squares[b] / sum(squares), rel_tol=1e-7)


def test_no_records_between_pair_steps() -> None:
    x = torch.nn.Parameter(torch.ones(4))
    opt = MLBFGS([x], lr=0.1, update_period=3)
    for step in range(1, 8):
        opt.zero_grad()
        (x * x).sum().backward()
        opt.step()
        assert bool(opt.last_pairs) == (step > 1 and (step - 1) % 3 == 0)
        for r in opt.last_pairs:
            assert math.isclose(r.direction_share, 1.0)


A2 = (10.0, 0.1)  # a steep block and a flat one, both kept away from zero by a small lr


def _two_blocks(norm: str) -> tuple[MLBFGS, list[torch.Tensor], list[list[float]]]:
    """The two-block quadratic of :data:`A2` trained 12 steps with pairs every 2; per pair step the
    blocks' shares of the step, then of the squared gradient."""
    torch.manual_seed(0)
    x = [torch.randn(n, dtype=torch.float64, requires_grad=True) for n in (5, 3)]
    opt = MLBFGS(x, lr=0.001, momentum=0.0, beta=0.0, update_period=2, history_size=2, blocks=[[x[0]], [x[1]]],
                 direction_norm=norm)
    shares = []
    for _ in range(12):
        opt.zero_grad()
        sum(0.5 * a * (t * t).sum() for a, t in zip(A2, x)).backward()
        grads = [float(t.grad.norm()) ** 2 for t in x]
        opt.step()
        if opt.last_pairs:
            shares.append([r.direction_share for r in opt.last_pairs] + [g / sum(grads) for g in grads])
    return opt, x, shares


def test_block_norm_gives_each_block_its_gradients_share_of_the_step() -> None:
    """Blocks of curvature 10 and 0.1: with "global" the flat block's share of the step is many times its
    share of the gradient (gamma_b ~ 1 / mu_b moves step length between blocks); with "block" each
    block's step is scaled to its gradient's norm, so the shares are the gradient's."""
    _, _, glob = _two_blocks("global")
    _, _, block = _two_blocks("block")
    for _, step1, _, grad1 in glob:
        assert step1 > 10 * grad1  # the global rescaling hands the flat block far more than its share
    for step0, step1, grad0, grad1 in block:
        assert math.isclose(step0, grad0, rel_tol=1e-9) and math.isclose(step1, grad1, rel_tol=1e-9)


def test_block_norm_step_is_unit_length_and_keeps_each_blocks_direction() -> None:
    opt, x, _ = _two_blocks("block")
    before = [t.detach().clone() for t in x]
    opt.zero_grad()
    sum(0.5 * a * (t * t).sum() for a, t in zip(A2, x)).backward()
    g = [t.grad.detach().clone() for t in x]
    d = []
    for b in (0, 1):  # H_b g_b with the ring as it is before this step's pair (none forms at step 13)
        v = g[b].clone()
        opt.apply_inverse_hessian_(b, v)
        d.append(v * g[b].norm() / v.norm())
    total = torch.cat(d).norm()
    opt.step()
    for b in (0, 1):
        assert torch.allclose(before[b] - x[b].detach(), 0.001 * d[b] / total, rtol=1e-9, atol=1e-15)


def test_an_unknown_direction_norm_names_the_allowed_values() -> None:
    import pytest

    x = torch.nn.Parameter(torch.ones(4))
    with pytest.raises(ValueError, match="direction_norm: expected one of .*'block'"):
        MLBFGS([x], lr=0.1, direction_norm="bogus")
