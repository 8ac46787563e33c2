"""The authors' reference variants against dense float64 reimplementations written here from the
description of their code (spec, "How the reference's block version differs"), one behaviour at a
time: each behaviour switched to ours must break the agreement."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines import build_optimizer
from baselines.mlbfgs_authors import AuthorsBehaviour, AuthorsMLBFGS, authors_blocks

STEPS, T, M = 16, 3, 2
HYPER = {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "beta": 0.9, "pair_momentum": 0.5, "update_period": T,
         "history_size": M, "damping": 0.01}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2)).double()


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 3, generator=gen, dtype=torch.float64), torch.randint(0, 2, (8,), generator=gen))
            for _ in range(STEPS)]


def _grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [p.grad.detach().clone() for p in model.parameters()]


def _dense_h(S: list[torch.Tensor], Y: list[torch.Tensor], gamma: float, n: int, eps: float = 0.0) -> torch.Tensor:
    """The BFGS inverse-Hessian matrix, built pair by pair (no two-loop recursion):
    H <- V^T H V + rho s s^T, V = I - rho y s^T, rho = 1 / (s.y + eps)."""
    eye = torch.eye(n, dtype=torch.float64)
    H = gamma * eye
    for s, y in zip(S, Y, strict=True):
        rho = 1.0 / (float(s @ y) + eps)
        V = eye - rho * torch.outer(y, s)
        H = V.T @ H @ V + rho * torch.outer(s, s)
    return H


def _damp(s: torch.Tensor, y: torch.Tensor, low: float, high: float, tau0: float, eps: float):
    mu = float(s @ y) / (float(s @ s) + eps)
    phi = (1 - low) / (1 - mu) if mu < low else ((high - 1) / (mu - 1) if mu > high else 1.0)
    phi = min(phi, 1 - tau0)
    return phi * y + (1 - phi) * s


@torch.no_grad()
def _momentum_update(params: list[nn.Parameter], dirs: list[torch.Tensor], bufs: list) -> None:
    """buf <- momentum buf + d (buf = d at first); theta <- theta - lr buf."""
    for i, (p, d) in enumerate(zip(params, dirs, strict=True)):
        bufs[i] = d.clone() if bufs[i] is None else HYPER["momentum"] * bufs[i] + d
        p -= HYPER["lr"] * bufs[i]


def reference_block(model: nn.Module, batches, in_block: list[bool]) -> list[torch.Tensor]:
    """BlockSlimQN as described: sums, restart of G, lambda*g in G, anchors at T and pairs at kT,
    momentum on the damped y, global-norm direction, outside parameters get g / ||d||."""
    h = HYPER
    params = list(model.parameters())
    blk = [p for p, b in zip(params, in_block, strict=True) if b]
    n = sum(p.numel() for p in blk)
    P = G = P0 = G0 = None
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    gamma = 1.0
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for k, (x, yb) in enumerate(batches, start=1):
        grads = _grads(model, x, yb)
        theta = torch.cat([p.detach().reshape(-1) for p in blk])
        g = torch.cat([gr.reshape(-1) for gr, b in zip(grads, in_block, strict=True) if b])
        g_in = (1 + h["weight_decay"]) * g
        if P is None:
            P, G = theta.clone(), g_in.clone()
        else:
            P, G = h["beta"] * P + theta, h["beta"] * G + g_in
        if k % T == 0:
            if P0 is None:
                P0, G0 = P.clone(), G.clone()
            else:
                s, y = P - P0, G - G0
                P0, G0 = P.clone(), G.clone()
                if S:
                    s = (1 - h["pair_momentum"]) * s + h["pair_momentum"] * S[-1]
                    y = (1 - h["pair_momentum"]) * y + h["pair_momentum"] * Y[-1]
                y_hat = _damp(s, y, 0.01, 1.5, h["damping"], 1e-12)
                S, Y = (S + [s])[-M:], (Y + [y_hat])[-M:]
                gamma = float(s @ y_hat) / (float(y_hat @ y_hat) + 1e-12)
            G = g_in.clone()
        if S:
            d = _dense_h(S, Y, gamma, n) @ (g + h["weight_decay"] * theta)
            norm = float(d.norm())
            chunks = list(torch.split(d / norm, [p.numel() for p in blk]))
            dirs = [chunks.pop(0).view_as(p) if b else gr / norm
                    for p, gr, b in zip(params, grads, in_block, strict=True)]
        else:
            dirs = [gr + h["weight_decay"] * p.detach() for p, gr in zip(params, grads, strict=True)]
        _momentum_update(params, dirs, bufs)
    return [p.detach().clone() for p in params]


def _run(model: nn.Module, batches, opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    for x, y in batches:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in model.parameters()]


def _block_opt(model: nn.Module, behaviour: AuthorsBehaviour | None = None, blocks=None) -> AuthorsMLBFGS:
    if blocks is None:
        blocks, _ = authors_blocks(model)
    return AuthorsMLBFGS(list(model.parameters()), blocks, variant="block", behaviour=behaviour, **HYPER)


def _max_rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max() / (y.abs().max() + 1e-30)) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def reference() -> list[torch.Tensor]:
    model = _model()
    blocks, _ = authors_blocks(model)
    ids = {id(p) for p in blocks[0]}
    return reference_block(model, _batches(), [id(p) in ids for p in model.parameters()])


def test_block_version_matches_the_dense_reference(reference: list[torch.Tensor]) -> None:
    model = _model()
    opt = _block_opt(model)
    got = _run(model, _batches(), opt)
    assert _max_rel(got, reference) < 1e-10
    st = opt._state()
    assert st["started"] and st["blocks"]["0"]["count"] == M  # pairs at 6, 9, 12, 15: the ring wrapped
    assert _max_rel(got, [p.detach() for p in _model().parameters()]) > 1e-2  # it trained


@pytest.mark.parametrize("switch", [
    {"averages": "mean"},
    {"restart_grad_average": False},
    {"grad_decay": "theta"},
    {"timing": "ours"},
    {"pair_momentum_on": "raw"},
])
def test_each_behaviour_switched_to_ours_breaks_the_agreement(switch: dict, reference: list[torch.Tensor]) -> None:
    model = _model()
    got = _run(model, _batches(), _block_opt(model, AuthorsBehaviour(**switch)))
    assert _max_rel(got, reference) > 1e-6


def test_blocks_per_layer_break_the_agreement(reference: list[torch.Tensor]) -> None:
    model = _model()
    layers = [[m.weight, m.bias] for m in model if isinstance(m, nn.Linear)]
    got = _run(model, _batches(), _block_opt(model, blocks=layers))
    assert _max_rel(got, reference) > 1e-6


def test_authors_partition_per_model_family() -> None:
    from torchvision.models import resnet18, resnet50

    r18 = resnet18(num_classes=10)
    blocks, outside = authors_blocks(r18)
    assert len(blocks) == 1
    assert {id(p) for p in outside} == {id(p) for m in (r18.conv1, r18.bn1, r18.fc) for p in m.parameters()}
    r50 = resnet50(num_classes=10)
    blocks, outside = authors_blocks(r50)
    assert [sum(p.numel() for p in b) for b in blocks] == [
        sum(p.numel() for p in getattr(r50, f"layer{i}").parameters()) for i in range(1, 5)]
    assert {id(p) for p in outside} == {id(p) for m in (r50.conv1, r50.bn1, r50.fc) for p in m.parameters()}
    from experiments.workloads.models.vit import ViTClassifier

    vit = ViTClassifier(image_size=28, in_channels=1, num_classes=10, patch_size=7, hidden_size=16, num_layers=1,
                        num_heads=2, mlp_ratio=2)
    blocks, outside = authors_blocks(vit)
    assert len(blocks) == 1 and not outside and len(blocks[0]) == len(list(vit.parameters()))


def reference_model_version(model: nn.Module, batches, kappa: float, rho_min: float) -> list[torch.Tensor]:
    """SlimQN as described: normalised averages, no weight decay in G, eps 1e-5, bounds (0.01, 1.0),
    pairs with s.y_hat < rho_min dropped, nu = min(1, sqrt(kappa / g.d)) with the raw gradient."""
    h = HYPER
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    P = G = P0 = G0 = None
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    gamma = 1.0
    bufs: list[torch.Tensor | None] = [None] * len(params)
    b = h["beta"]
    for k, (x, yb) in enumerate(batches, start=1):
        grads = _grads(model, x, yb)
        theta = torch.cat([p.detach().reshape(-1) for p in params])
        g = torch.cat([gr.reshape(-1) for gr in grads])
        if P is None:
            P, G = theta.clone(), g.clone()
        else:
            P, G = b * P + (1 - b) * theta, b * G + (1 - b) * g
        if k % T == 0:
            if P0 is None:
                P0, G0 = P.clone(), G.clone()
            else:
                s, y = P - P0, G - G0
                P0, G0 = P.clone(), G.clone()
                y_hat = _damp(s, y, 0.01, 1.0, h["damping"], 1e-5)
                S, Y = S[-(M - 1):], Y[-(M - 1):]  # the full ring drops its oldest pair first
                if float(s @ y_hat) >= rho_min:
                    S, Y = S + [s], Y + [y_hat]
                    gamma = float(s @ y_hat) / (float(y_hat @ y_hat) + 1e-5)
        if S:
            # the reference adds eps to every s.y of its two-loop recursion
            d = _dense_h(S, Y, gamma, n, eps=1e-5) @ (g + h["weight_decay"] * theta)
            d = d * min(1.0, math.sqrt(kappa / float(g @ d)))
            dirs = list(torch.split(d, [p.numel() for p in params]))
            dirs = [c.view_as(p) for c, p in zip(dirs, params, strict=True)]
        else:
            dirs = [gr + h["weight_decay"] * p.detach() for p, gr in zip(params, grads, strict=True)]
        _momentum_update(params, dirs, bufs)
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("kappa", [1e-3, 1.0])
def test_model_version_matches_the_dense_reference(kappa: float) -> None:
    ref = reference_model_version(_model(), _batches(), kappa, 1e-12)
    model = _model()
    kw = {k: v for k, v in HYPER.items() if k != "pair_momentum"}
    opt = AuthorsMLBFGS(list(model.parameters()), variant="model", kl_clip=kappa, rho_min=1e-12, **kw)
    got = _run(model, _batches(), opt)
    assert _max_rel(got, ref) < 1e-9
    assert opt._state()["started"]


def test_model_version_rejects_small_pairs_and_stays_sgd() -> None:
    # every pair below rho_min is dropped: no pair is ever used, the run is plain SGD on g + lambda theta
    model, sgd_model = _model(), _model()
    kw = {k: v for k, v in HYPER.items() if k != "pair_momentum"}
    opt = AuthorsMLBFGS(list(model.parameters()), variant="model", rho_min=1e9, **kw)
    got = _run(model, _batches(), opt)
    sgd = torch.optim.SGD(sgd_model.parameters(), lr=HYPER["lr"], momentum=HYPER["momentum"],
                          weight_decay=HYPER["weight_decay"])
    assert _max_rel(got, _run(sgd_model, _batches(), sgd)) < 1e-12
    assert not opt._state()["started"]
    assert [r["accepted"] for r in opt.last_pairs] in ([], [False])


def test_registry_builds_both_and_resumes_bit_exactly() -> None:
    for name in ("mlbfgs_authors", "slimqn_authors"):
        model = _model()
        opt = build_optimizer(name, model, lr=0.05, update_period=2, history_size=2)
        batches = _batches()

        def step(x: torch.Tensor, y: torch.Tensor, m: nn.Module = model, o=opt) -> None:
            def closure(backward: bool = True) -> torch.Tensor:
                m.zero_grad()
                loss = F.cross_entropy(m(x), y)
                loss.backward()
                return loss.detach()
            o.step(closure)

        for x, y in batches[:7]:
            step(x, y)
        saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
        for x, y in batches[7:]:
            step(x, y)
        straight = [p.detach().clone() for p in model.parameters()]

        model2 = _model()
        model2.load_state_dict(saved_model)
        opt2 = build_optimizer(name, model2, lr=0.05, update_period=2, history_size=2)
        opt2.load_state_dict(saved_opt)
        for x, y in batches[7:]:
            step(x, y, model2, opt2)
        assert all(torch.equal(a, b) for a, b in zip(straight, model2.parameters(), strict=True)), name
        assert opt.curvature_records() == [] or {"block", "mu", "accepted"} <= set(opt.curvature_records()[0])


def test_bad_settings_name_the_argument() -> None:
    model = _model()
    with pytest.raises(ValueError, match="timing"):
        build_optimizer("mlbfgs_authors", model, timing="late")
    with pytest.raises(ValueError, match="averages"):
        AuthorsBehaviour(averages="median")
    with pytest.raises(ValueError, match="variant"):
        AuthorsMLBFGS(list(model.parameters()), variant="layer")
    with pytest.raises(ValueError, match="blocks is required"):
        AuthorsMLBFGS(list(model.parameters()), variant="block")
    with pytest.raises(ValueError, match="bounds"):
        AuthorsMLBFGS(list(model.parameters()), variant="model", bounds=(0.5, 0.9))
