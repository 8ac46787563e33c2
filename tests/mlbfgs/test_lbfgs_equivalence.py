"""With beta=0, T=1, no momentum and full-batch gradients, mL-BFGS is plain fixed-step L-BFGS."""

import numpy as np
import torch

from mlbfgs import MLBFGS


def reference_lbfgs(a: np.ndarray, b: np.ndarray, x0: np.ndarray, lr: float, steps: int) -> list[np.ndarray]:
    """Textbook two-loop L-BFGS with H0 = (s.y / y.y) I of the newest pair; d = g before any pair."""
    x = x0.copy()
    g = a @ x - b
    s_list, y_list, xs = [], [], []
    for _ in range(steps):
        q = g.copy()
        alphas = []
        for s, y in reversed(list(zip(s_list, y_list))):
            alpha = (s @ q) / (s @ y)
            alphas.append(alpha)
            q -= alpha * y
        if s_list:
            q *= (s_list[-1] @ y_list[-1]) / (y_list[-1] @ y_list[-1])
        for (s, y), alpha in zip(zip(s_list, y_list), reversed(alphas)):
            beta = (y @ q) / (s @ y)
            q += (alpha - beta) * s
        x_new = x - lr * q
        g_new = a @ x_new - b
        s_list.append(x_new - x)
        y_list.append(g_new - g)
        x, g = x_new, g_new
        xs.append(x.copy())
    return xs


def test_iterates_match_plain_lbfgs_on_a_quadratic() -> None:
    rng = np.random.default_rng(0)
    n = 8
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = q @ np.diag(np.linspace(0.5, 5.0, n)) @ q.T
    b = rng.standard_normal(n)
    x0 = rng.standard_normal(n)
    lr = 0.3
    expected = reference_lbfgs(a, b, x0, lr, steps=12)

    x = torch.nn.Parameter(torch.from_numpy(x0.copy()))
    at, bt = torch.from_numpy(a), torch.from_numpy(b)
    opt = MLBFGS([x], lr=lr, momentum=0.0, beta=0.0, update_period=1, history_size=100, damping=0.0,
                 curvature_bounds=(0.01, 100.0), direction_norm="none")
    for k in range(12):
        opt.zero_grad()
        loss = 0.5 * x @ at @ x - bt @ x
        loss.backward()
        opt.step()
        np.testing.assert_allclose(x.detach().numpy(), expected[k], rtol=1e-9, atol=1e-12)
    # and the curvature was really used: gradient descent would be far from these iterates
    assert opt.stats["pairs_accepted"] == 11
