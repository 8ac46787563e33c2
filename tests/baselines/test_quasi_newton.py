"""oLBFGS, SQN and the L-BFGS pieces against independent computations."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from baselines import build_optimizer
from baselines.lbfgs_math import dense_inverse_hessian
from baselines.sqn import hessian_vector_product
from mlbfgs.compact import two_loop_

DT = torch.float64


# ---------------------------------------------------------------------------------------------------
# two-loop recursion


@pytest.mark.parametrize("k", [0, 1, 4])
def test_two_loop_equals_dense_bfgs_inverse_hessian(k):
    gen = torch.Generator().manual_seed(k)
    n = 7
    q = torch.randn(n, n, generator=gen, dtype=DT)
    hess = q @ q.T + 0.5 * torch.eye(n, dtype=DT)
    s = [torch.randn(n, generator=gen, dtype=DT) for _ in range(k)]
    y = [hess @ si for si in s]  # s.y > 0
    rho = [1.0 / torch.dot(si, yi) for si, yi in zip(s, y, strict=True)]
    gamma = 0.37
    g = torch.randn(n, generator=gen, dtype=DT)
    expected = dense_inverse_hessian(s, y, gamma, n) @ g
    torch.testing.assert_close(two_loop_(g.clone(), s, y, rho, gamma), expected)


def test_dense_inverse_hessian_satisfies_the_secant_equation():
    gen = torch.Generator().manual_seed(3)
    s = [torch.randn(5, generator=gen, dtype=DT) for _ in range(3)]
    y = [si + 0.1 * torch.randn(5, generator=gen, dtype=DT) for si in s]
    h = dense_inverse_hessian(s, y, 1.0, 5)
    torch.testing.assert_close(h @ y[-1], s[-1])


# ---------------------------------------------------------------------------------------------------
# SQN


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 2)).to(DT)


def test_hvp_matches_finite_differences_of_gradients():
    model = _mlp()
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 3, generator=gen, dtype=DT)
    y = torch.randint(0, 2, (9,), generator=gen)
    v = [torch.randn(p.shape, generator=gen, dtype=DT) for p in params]

    def loss_fn():
        return nn.functional.cross_entropy(model(x), y)

    hv = hessian_vector_product(loss_fn(), params, v)

    def grad_at(sign: float, h: float) -> list[torch.Tensor]:
        shifted = copy.deepcopy(model)
        with torch.no_grad():
            for p, vi in zip(shifted.parameters(), v, strict=True):
                p.add_(sign * h * vi)
        return torch.autograd.grad(nn.functional.cross_entropy(shifted(x), y), list(shifted.parameters()))

    h = 1e-5
    fd = [(a - b) / (2 * h) for a, b in zip(grad_at(1.0, h), grad_at(-1.0, h), strict=True)]
    for got, want in zip(hv, fd, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


def test_hvp_is_exact_on_a_quadratic():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(4, 4, generator=gen, dtype=DT)
    q = a @ a.T
    w = torch.randn(4, generator=gen, dtype=DT, requires_grad=True)
    v = torch.randn(4, generator=gen, dtype=DT)
    (hv,) = hessian_vector_product(0.5 * w @ q @ w, [w], [v])
    torch.testing.assert_close(hv, q @ v)


class _Quadratic(nn.Module):
    """f(w) = 0.5 (w - c)^T Q (w - c); ``batch`` selects one of several centres c."""

    def __init__(self, n: int = 6, batches: int = 3, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        a = torch.randn(n, n, generator=gen, dtype=DT)
        self.register_buffer("q", a @ a.T / n + 0.2 * torch.eye(n, dtype=DT))
        self.register_buffer("centres", torch.randn(batches, n, generator=gen, dtype=DT))
        self.w = nn.Parameter(torch.randn(n, generator=gen, dtype=DT))

    def loss(self, batch: int) -> torch.Tensor:
        d = self.w - self.centres[batch]
        return 0.5 * d @ self.q @ d

    def grad(self, w: torch.Tensor, batch: int) -> torch.Tensor:
        return self.q @ (w - self.centres[batch])


def _closure_on(model: _Quadratic, opt, batch: int, log: list | None = None):
    def closure(backward: bool = True) -> torch.Tensor:
        if log is not None:
            log.append((batch, model.w.detach().clone(), backward))
        loss = model.loss(batch)
        if backward:
            opt.zero_grad()
            loss.backward()
            return loss.detach()
        return loss

    return closure


def test_sqn_iterates_match_an_independent_dense_implementation():
    L, M, lr, steps, wd = 3, 2, 0.3, 14, 0.01
    model = _Quadratic()
    opt = build_optimizer("sqn", model, lr=lr, update_period=L, history_size=M, weight_decay=wd)
    ref = _Quadratic()
    w = ref.w.detach().clone()
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    acc, xbar_old = torch.zeros_like(w), None
    hess = ref.q + wd * torch.eye(len(w), dtype=DT)
    for k in range(1, steps + 1):
        batch = k % 3
        opt.step(_closure_on(model, opt, batch))
        g = ref.grad(w, batch) + wd * w
        acc += w
        if pairs:
            s_last, y_last = pairs[-1]
            gamma = float(s_last @ y_last / (y_last @ y_last))
            hmat = dense_inverse_hessian([p[0] for p in pairs], [p[1] for p in pairs], gamma, len(w))
            w = w - lr * hmat @ g
        else:
            w = w - lr * g
        if k % L == 0:
            xbar = acc / L
            acc = torch.zeros_like(w)
            if xbar_old is not None:
                s = xbar - xbar_old
                pairs = (pairs + [(s, hess @ s)])[-M:]
            xbar_old = xbar
        torch.testing.assert_close(model.w.detach(), w, msg=f"step {k}")
    assert len(pairs) == M


def test_sqn_hvp_is_taken_at_the_averaged_iterate_on_the_current_batch():
    L = 2
    model = _Quadratic()
    opt = build_optimizer("sqn", model, lr=0.1, update_period=L)
    log: list = []
    iterates = []
    for k in range(1, 2 * L + 1):
        iterates.append(model.w.detach().clone())
        opt.step(_closure_on(model, opt, k % 3, log))
    hvp_calls = [(b, w) for b, w, backward in log if not backward]
    assert len(hvp_calls) == 1
    batch, w_at = hvp_calls[0]
    assert batch == (2 * L) % 3
    torch.testing.assert_close(w_at, torch.stack(iterates[L:]).mean(0))
    assert opt.grad_evals == 2 * L + 2


# ---------------------------------------------------------------------------------------------------
# oLBFGS


def test_olbfgs_evaluates_both_gradients_of_a_step_on_the_same_batch():
    model = _Quadratic()
    opt = build_optimizer("olbfgs", model, lr=0.05)
    log: list = []
    for t in range(5):
        opt.step(_closure_on(model, opt, t % 3, log))
    assert len(log) == 10
    for t in range(5):
        (b1, w1, bw1), (b2, w2, bw2) = log[2 * t], log[2 * t + 1]
        assert b1 == b2 == t % 3
        assert bw1 and bw2
        assert not torch.equal(w1, w2)  # the second gradient is taken after the update
        if t + 1 < 5:
            torch.testing.assert_close(log[2 * t + 2][1], w2)  # ... at theta_{t+1}
    assert opt.grad_evals == 10


def test_olbfgs_iterates_match_the_paper_algorithm():
    lr, tau, c, lam, eps, m = 0.2, 5.0, 0.5, 0.1, 1e-3, 2
    model = _Quadratic()
    opt = build_optimizer("olbfgs", model, lr=lr, tau=tau, c=c, lam=lam, eps=eps, history_size=m)
    ref = _Quadratic()
    w = ref.w.detach().clone()
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    for t in range(7):
        batch = t % 3
        opt.step(_closure_on(model, opt, batch))
        g = ref.grad(w, batch)
        if pairs:
            gamma = sum(float(s @ y / (y @ y)) for s, y in pairs) / len(pairs)
            p = -dense_inverse_hessian([q[0] for q in pairs], [q[1] for q in pairs], gamma, len(w)) @ g
        else:
            p = -eps * g
        s = (lr * tau / (tau + t) / c) * p
        w = w + s
        y = ref.grad(w, batch) - g + lam * s  # same batch
        pairs = (pairs + [(s, y)])[-m:]
        torch.testing.assert_close(model.w.detach(), w, msg=f"step {t}")
        (record,) = opt.curvature_records()
        assert record["accepted"]
        assert record["mu"] == pytest.approx(float(s @ y / (s @ s)))


def test_olbfgs_rejects_negative_curvature_pairs():
    class Concave(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3, dtype=DT))

        def loss(self, batch):
            return -0.5 * (self.w**2).sum()

    model = Concave()
    opt = build_optimizer("olbfgs", model, lr=0.1)
    opt.step(_closure_on(model, opt, 0))
    (record,) = opt.curvature_records()
    assert record["mu"] < 0 and not record["accepted"]
    assert len(opt.optimizer._ring) == 0


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))


@pytest.mark.parametrize("name, kwargs", [("olbfgs", {}), ("sqn", {"update_period": 1})])
def test_extra_evaluations_do_not_update_batchnorm_statistics(name, kwargs):
    """Only the first evaluation of a step may move the running statistics."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, generator=gen), torch.randint(0, 2, (8,), generator=gen)
    model = _bn_net()
    opt = build_optimizer(name, model, **kwargs)
    for step in range(2):
        snapshots = []

        def closure(backward=True, snapshots=snapshots):
            loss = nn.functional.cross_entropy(model(x), y)
            snapshots.append(model[1].running_mean.clone())
            if backward:
                opt.zero_grad()
                loss.backward()
                return loss.detach()
            return loss

        opt.step(closure)
        if name == "sqn" and step == 0:
            continue  # SQN's first HVP comes at its second averaged iterate
        assert len(snapshots) == 2  # an extra evaluation did run in this step
        assert not torch.equal(snapshots[0], snapshots[1])  # ... and it moved the statistics
        torch.testing.assert_close(model[1].running_mean, snapshots[0], rtol=0, atol=0)  # restored


# ---------------------------------------------------------------------------------------------------
# checkpoints


@pytest.mark.parametrize("name", ["olbfgs", "sqn", "mlbfgs", "slbfgs"])
def test_state_dict_round_trip_resumes_identically(name):
    kwargs = {"sqn": {"update_period": 2}, "mlbfgs": {"update_period": 2}, "slbfgs": {"update_period": 2}}
    kwargs = kwargs.get(name, {})
    a = _Quadratic()
    opt_a = build_optimizer(name, a, lr=0.05, **kwargs)
    for t in range(5):
        opt_a.step(_closure_on(a, opt_a, t % 3))
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    b = _Quadratic()
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer(name, b, lr=0.05, **kwargs)
    opt_b.load_state_dict(torch.load(buffer, weights_only=False))
    assert opt_b.grad_evals == opt_a.grad_evals
    for t in range(5, 10):
        opt_a.step(_closure_on(a, opt_a, t % 3))
        opt_b.step(_closure_on(b, opt_b, t % 3))
    torch.testing.assert_close(a.w, b.w, rtol=0, atol=0)
    assert opt_b.grad_evals == opt_a.grad_evals
