"""Damping keeps the curvature ratio s.y_hat / s.s inside [sigma_L, sigma_H]."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbfgs import MLBFGS, damping_factor

vectors = st.integers(min_value=2, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n, max_size=n),
        st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=n, max_size=n),
    )
)


@settings(max_examples=300, deadline=None)
@given(
    vectors,
    st.floats(0.001, 0.5),
    st.floats(1.0, 10.0),
    st.floats(0.0, 0.5),
)
def test_damped_ratio_within_bounds(sy_vectors, sigma_low, sigma_high, tau0) -> None:
    s = np.array(sy_vectors[0])
    y = np.array(sy_vectors[1])
    ss = float(s @ s)
    if ss < 1e-6:
        return
    phi = damping_factor(float(s @ y), ss, sigma_low, sigma_high, tau0)
    assert phi <= 1.0 - tau0 + 1e-15
    y_hat = phi * y + (1.0 - phi) * s
    ratio = float(s @ y_hat) / ss
    tol = 1e-9 * (1.0 + abs(float(s @ y)) / ss)
    assert sigma_low - tol <= ratio <= sigma_high + tol


def test_pairs_stored_by_the_optimizer_are_damped() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(50, dtype=torch.float64))
    opt = MLBFGS([w], lr=0.1, update_period=2, beta=0.5, history_size=50, curvature_bounds=(0.2, 1.2))
    target = torch.randn(50, dtype=torch.float64)
    scales = torch.logspace(-3, 2, 50, dtype=torch.float64)  # ill-conditioned and noisy: damping needed
    raw_mu = []
    for _ in range(60):
        w.grad = scales * (w.detach() - target) + torch.randn(50, dtype=torch.float64)
        opt.step()
        raw_mu += [r.mu for r in opt.last_pairs]
    st_ = opt.block_state(0)
    hist, m = st_["history"], 50
    n = st_["num_pairs"]
    assert n >= 20
    ratios = [float(hist[i] @ hist[m + i] / (hist[i] @ hist[i])) for i in range(n)]
    assert min(ratios) >= 0.2 - 1e-9 and max(ratios) <= 1.2 + 1e-9
    # the raw pairs did need damping, or this test would prove nothing
    assert min(raw_mu) < 0.2 or max(raw_mu) > 1.2
    assert opt.stats["pairs_accepted"] == n
