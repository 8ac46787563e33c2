"""The peers (baselines/peers/) against the updates their papers define, on small problems."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

pytest.importorskip("schedulefree")
pytest.importorskip("pytorch_optimizer")

from baselines import available_optimizers, build_optimizer, installed_optimizers  # noqa: E402
from baselines.peers.adamw_schedulefree import AdamWScheduleFreeConfig, build_adamw_schedulefree  # noqa: E402
from baselines.peers.muon import MuonConfig, build_muon  # noqa: E402


@pytest.mark.parametrize("library, distribution, names", [
    ("schedulefree", "schedulefree", {"adamw_schedulefree"}),
    ("pytorch_optimizer", "pytorch-optimizer", {"muon", "soap", "shampoo"}),
])
def test_a_missing_peer_library_is_named_when_its_optimizer_is_built(
        monkeypatch: pytest.MonkeyPatch, library: str, distribution: str, names: set[str]) -> None:
    """The peers' libraries are optional: without one, only the peers built on it are missing, the other
    optimizers work, and building one of those peers says what to install."""
    monkeypatch.setitem(sys.modules, library, None)  # import <library> -> ModuleNotFoundError
    for module in [m for m in sys.modules if m.startswith("baselines.peers.")]:
        monkeypatch.delitem(sys.modules, module)
    missing = set(available_optimizers()) - set(installed_optimizers())
    assert missing == names
    for name in names:
        with pytest.raises(ModuleNotFoundError, match=rf"optimizer '{name}' needs {distribution} .*"
                                                      r"pip install -r requirements.txt"):
            build_optimizer(name, nn.Linear(3, 2))
    for name in {"sgd", "adamw_schedulefree", "muon"} - names:
        build_optimizer(name, nn.Linear(3, 2))


def _quadratic_step(model: nn.Module, gen: torch.Generator) -> None:
    x = torch.randn(32, 6, generator=gen, dtype=torch.float64)
    model.zero_grad(set_to_none=True)
    (model(x) ** 2).mean().backward()


def test_schedule_free_evaluates_the_uniform_average_of_its_z_iterates() -> None:
    """Defazio et al. 2024, Alg. 1 with a constant lr and weights lr^2: c_{t+1} = 1/(t+1), so after t steps the
    evaluation point x is the mean of the t iterates z, and the gradient point y = (1 - beta1) z + beta1 x."""
    torch.manual_seed(0)
    model = nn.Linear(6, 3).double()
    opt = build_adamw_schedulefree(model, AdamWScheduleFreeConfig(lr=0.01)).optimizer
    gen = torch.Generator().manual_seed(1)
    zs = []  # z after each step: the first step's weight is 1, so x forgets the start
    for _ in range(7):
        _quadratic_step(model, gen)
        opt.step()
        zs.append([opt.state[p]["z"].detach().clone() for p in model.parameters()])
    y = [p.detach().clone() for p in model.parameters()]
    opt.eval()
    for i, p in enumerate(model.parameters()):
        x = torch.stack([z[i] for z in zs]).mean(0)
        torch.testing.assert_close(p.detach(), x, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(y[i], 0.1 * zs[-1][i] + 0.9 * x, rtol=1e-10, atol=1e-12)


def test_muon_steps_the_hidden_matrices_by_an_orthogonalised_momentum() -> None:
    """Jordan et al. 2024: the first step of a hidden matrix is lr times the Newton-Schulz orthogonalisation of
    its momentum, which from zero is a multiple of the gradient: for a well-conditioned gradient, close to
    its polar factor U V^T (the five "original" quintic steps leave singular values in about [0.7, 1.2])."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = build_muon(model, MuonConfig(lr=0.02)).optimizer
    gen = torch.Generator().manual_seed(1)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    hidden = model[2].weight
    before, grad = hidden.detach().clone(), hidden.grad.detach().clone()
    opt.step()
    step = (before - hidden.detach()) / 0.02
    u, _, vh = torch.linalg.svd(grad)
    polar = u @ vh

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a * b).sum() / (a.norm() * b.norm()))

    assert cosine(step, polar) > 0.95 > cosine(grad, polar), (cosine(step, polar), cosine(grad, polar))
    singular = torch.linalg.svdvals(step)
    assert float(singular.max()) < 1.3 and float(singular.min()) > 0.5, singular


def _rotated_runs(name: str, steps: int = 12) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train one square matrix W on 0.5 ||s * (A W B - C)||^2 (s varies per step) from W0, and the same problem
    rotated, W~ = U W V^T with U, V orthogonal, from U W0 V^T. Returns (W0, W_t, U^T W~_t V) in float64."""
    gen = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(shape, generator=gen, dtype=torch.float64) for shape in ((8, 5), (5, 7), (8, 7)))
    u = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))[0]
    w0 = torch.randn(5, 5, generator=gen, dtype=torch.float64)

    def run(rotate: bool) -> torch.Tensor:
        model = nn.Module()
        model.w = nn.Parameter(u @ w0 @ v.T if rotate else w0.clone())
        opt = build_optimizer(name, model, lr=0.01, weight_decay=0.0).optimizer
        for t in range(steps):
            opt.zero_grad()
            w = u.T @ model.w @ v if rotate else model.w
            s = 1 + 0.5 * torch.rand(8, 1, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
            (0.5 * (s * (a @ w @ b - c)).pow(2).sum()).backward()
            opt.step()
        w = model.w.detach()
        return u.T @ w @ v if rotate else w

    return w0, run(False), run(True)


@pytest.mark.parametrize("name", ["soap", "adam"])
def test_soap_rotates_with_the_problem(name: str) -> None:
    """SOAP (Vyas et al. 2024) runs Adam in the eigenbases of the Kronecker factors L = sum G G^T and
    R = sum G^T G: it follows an orthogonal change of coordinates W -> U W V^T, since L, R and their
    eigenbases rotate with it. Adam, coordinate-wise, does not (the control that lets this fail). Shampoo's
    grafting takes its step length from a coordinate-wise method, so it is checked by its formula below."""
    w0, plain, rotated = _rotated_runs(name)
    error = float((plain - rotated).norm() / (plain - w0).norm())
    if name == "adam":
        assert error > 0.1, error
    else:
        assert error < 1e-4, error


def _inverse_fourth_root(m: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(m)
    return vectors @ torch.diag(values ** -0.25) @ vectors.T


@pytest.mark.parametrize(("use_svd", "rtol"), [(True, 1e-6), (False, 2e-3)])
def test_shampoo_steps_by_the_inverse_fourth_roots_of_its_kronecker_factors(use_svd: bool, rtol: float) -> None:
    """Gupta et al. 2018 / Anil et al. 2020 without grafting or momentum: L_t = beta2 L + (1 - beta2) G G^T,
    R_t likewise with G^T G, and W <- W - lr L_t^{-1/4} G R_t^{-1/4}, against a dense float64 eigendecomposition:
    exact with the library's SVD roots, within 2e-3 with its default coupled Newton iteration (the registry's).
    The registry's ``shampoo`` adds SGD grafting (each tensor's step takes the length of SGD's) and
    momentum on top of this direction, and leaves tensors of at most ``block_size`` elements to the graft."""
    gen = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(5, 5, generator=gen, dtype=torch.float64))  # square: L and R of full rank
    model = nn.Module()
    model.w = w
    beta2, lr = 0.9, 0.1
    opt = build_optimizer("baselines.peers.shampoo:Shampoo", model, lr=lr, betas=(0.0, beta2), graft_type=0,
                          nesterov=False, start_preconditioning_step=1, preconditioning_compute_steps=1,
                          shape_interpretation=False, matrix_eps=1e-12, use_svd=use_svd).optimizer
    left, right = torch.zeros(5, 5, dtype=torch.float64), torch.zeros(5, 5, dtype=torch.float64)
    for _ in range(4):
        g = torch.randn(5, 5, generator=gen, dtype=torch.float64)
        left, right = beta2 * left + (1 - beta2) * g @ g.T, beta2 * right + (1 - beta2) * g.T @ g
        expected = lr * _inverse_fourth_root(left) @ g @ _inverse_fourth_root(right)
        before = w.detach().clone()
        w.grad = g.clone()
        opt.step()
        step = before - w.detach()
        assert float((step - expected).norm() / expected.norm()) < rtol
