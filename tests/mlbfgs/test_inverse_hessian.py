"""H g from the curvature ring against a dense BFGS inverse Hessian built independently in float64."""

import numpy as np
import pytest
import torch

from mlbfgs import CurvatureHistory
from mlbfgs.compact import apply_two_loop


def random_pairs(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    hess = a @ a.T / n + 0.1 * np.eye(n)  # SPD, so s.y > 0
    pairs = []
    for _ in range(k):
        s = rng.standard_normal(n)
        y = hess @ s + 0.01 * rng.standard_normal(n)
        assert s @ y > 0
        pairs.append((s, y))
    return pairs


def dense_bfgs(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """H_{k+1} = (I - rho s y^T) H_k (I - rho y s^T) + rho s s^T from H_0 = gamma I (newest pair)."""
    n = pairs[0][0].size
    s_new, y_new = pairs[-1]
    h = (s_new @ y_new) / (y_new @ y_new) * np.eye(n)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        v = np.eye(n) - rho * np.outer(y, s)
        h = v.T @ h @ v + rho * np.outer(s, s)
    return h


def filled_history(pairs, capacity: int) -> CurvatureHistory:
    n = pairs[0][0].size
    hist = CurvatureHistory(CurvatureHistory.new_state(n, capacity, torch.float64, torch.device("cpu")))
    for s, y in pairs:
        hist.push(torch.from_numpy(s), torch.from_numpy(y), phi=1.0)
    return hist


@pytest.mark.parametrize("n,k,capacity", [(12, 3, 5), (12, 5, 5), (30, 13, 6), (7, 1, 4)])
def test_hg_matches_dense_bfgs(n: int, k: int, capacity: int) -> None:
    pairs = random_pairs(n, k, seed=n + k)
    hist = filled_history(pairs, capacity)
    h_dense = dense_bfgs(pairs[-capacity:])  # a full ring keeps the newest `capacity` pairs
    rng = np.random.default_rng(1)
    for _ in range(3):
        g = rng.standard_normal(n)
        hg = torch.from_numpy(g.copy())
        hist.apply_(hg)
        pwp = torch.zeros(1, dtype=torch.float64)
        hist.add_quadratic_(pwp)
        expected = h_dense @ g
        np.testing.assert_allclose(hg.numpy(), expected, rtol=1e-6, atol=1e-10 * np.abs(expected).max())
        assert g @ hg.numpy() > 0
        # g.Hg = gamma g.g + p^T Wf p (used by the KL rescaling)
        assert hist.gamma * (g @ g) + float(pwp) == pytest.approx(g @ expected, rel=1e-8)


def test_secant_condition_for_newest_pair() -> None:
    pairs = random_pairs(20, 8, seed=3)
    hist = filled_history(pairs, 6)
    s, y = pairs[-1]
    hy = torch.from_numpy(y.copy())
    hist.apply_(hy)
    np.testing.assert_allclose(hy.numpy(), s, rtol=1e-8, atol=1e-10)


def test_two_loop_agrees_with_compact() -> None:
    pairs = random_pairs(25, 9, seed=4)
    hist = filled_history(pairs, 4)
    g = torch.randn(25, dtype=torch.float64)
    compact = g.clone()
    hist.apply_(compact)
    gram = hist.state["gram"]
    m = hist.capacity
    rho = torch.tensor([1.0 / float(gram[i, m + i]) if gram[i, m + i] != 0 else 0.0 for i in range(m)], dtype=g.dtype)
    two_loop = g.clone()
    apply_two_loop(hist.state["history"], hist.order(), hist.gamma, two_loop, rho,
                   torch.zeros(m, dtype=g.dtype), torch.zeros((), dtype=g.dtype))
    torch.testing.assert_close(compact, two_loop, rtol=1e-9, atol=1e-12)


def test_float32_history_close_to_float64() -> None:
    pairs = random_pairs(40, 6, seed=5)
    h_dense = dense_bfgs(pairs[-6:])
    hist = CurvatureHistory(CurvatureHistory.new_state(40, 6, torch.float32, torch.device("cpu")))
    for s, y in pairs:
        hist.push(torch.from_numpy(s).float(), torch.from_numpy(y).float(), phi=1.0)
    g = np.random.default_rng(0).standard_normal(40)
    hg = torch.from_numpy(g).float()
    hist.apply_(hg)
    np.testing.assert_allclose(hg.numpy(), h_dense @ g, rtol=2e-3, atol=2e-3 * np.abs(h_dense @ g).max())
