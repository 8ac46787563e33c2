"""The peers (baselines/peers.py) against the updates their papers define, on small problems."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

pytest.importorskip("schedulefree")
pytest.importorskip("pytorch_optimizer")

from baselines import available_optimizers, build_optimizer, installed_optimizers  # noqa: E402
from baselines.peers import AdamWScheduleFreeConfig, MuonConfig, build_adamw_schedulefree, build_muon  # noqa: E402


def test_a_missing_peer_library_is_named_when_its_optimizer_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """The peers' libraries are optional: without one, the other optimizers work, and building a peer says
    what to install."""
    monkeypatch.setitem(sys.modules, "schedulefree", None)  # import schedulefree -> ModuleNotFoundError
    monkeypatch.delitem(sys.modules, "baselines.peers")
    with pytest.raises(ModuleNotFoundError, match=r"optimizer 'adamw_schedulefree' needs .*schedulefree.*"
                                                  r"pip install -r requirements.txt"):
        build_optimizer("adamw_schedulefree", nn.Linear(3, 2))
    missing = set(available_optimizers()) - set(installed_optimizers())
    assert missing == {"adamw_schedulefree", "muon"}
    build_optimizer("sgd", nn.Linear(3, 2))


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
