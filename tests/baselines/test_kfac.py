"""K-FAC against an independent dense computation of the damped Kronecker-factored Fisher.

The reference builds A and G by explicit loops over examples and (for convolutions) output
positions, forms the dense matrix kron(G, A) + damping * I in float64 and solves it with
torch.linalg.solve; the K-FAC direction (after the KL clip) must match it to 1e-5 relative.
"""

from __future__ import annotations

import io
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines import build_optimizer
from baselines.kfac import KFACPreconditioner
from baselines.kfac_dist import assign_owners

DT = torch.float64


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3, bias=False), nn.Tanh(), nn.Linear(3, 3)).to(DT)


def _convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(3, 2, 2, stride=2, bias=False),
        nn.Tanh(),
        nn.Conv2d(2, 2, 2, stride=1, dilation=1, padding=1),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 3),
    ).to(DT)


def _record_forward(model: nn.Module, x: torch.Tensor):
    """Forward by hand, keeping each layer's input and (grad-retaining) output."""
    records = []
    h = x
    for layer in model:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            inp = h.detach()
            h = layer(h)
            h.retain_grad()
            records.append((layer, inp, h))
        else:
            h = layer(h)
    return h, records


def _patches(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """(B, L, C*kh*kw) patches by explicit loops (channel-major, then kernel rows and columns)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel_size, layer.stride, layer.padding, layer.dilation
    xp = nn.functional.pad(x, (pw, pw, ph, ph))
    out_h = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for n in range(x.shape[0]):
        per = []
        for i in range(out_h):
            for j in range(out_w):
                patch = torch.empty(x.shape[1], kh, kw, dtype=x.dtype)
                for a in range(kh):
                    for b in range(kw):
                        patch[:, a, b] = xp[n, :, i * sh + a * dh, j * sw + b * dw]
                per.append(patch.reshape(-1))
        rows.append(torch.stack(per))
    return torch.stack(rows)


def _reference_factors(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Per layer: (A, G, M) of one batch, by definition; also leaves the gradients in the model."""
    model.zero_grad()
    out, records = _record_forward(model, x)
    loss = nn.functional.cross_entropy(out, y)
    loss.backward()
    batch = x.shape[0]
    result = []
    for layer, inp, outp in records:
        g_out = outp.grad * batch  # per-example gradients of the summed loss
        if isinstance(layer, nn.Linear):
            a = inp  # (B, in)
            g = g_out  # (B, out)
            m = layer.weight.grad.clone()
        else:
            a = _patches(layer, inp).reshape(-1, layer.weight[0].numel())  # (B L, C k k)
            g = g_out.permute(0, 2, 3, 1).reshape(-1, g_out.shape[1])  # (B L, out)
            m = layer.weight.grad.reshape(layer.weight.shape[0], -1).clone()
        if layer.bias is not None:
            a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=DT)], dim=1)
            m = torch.cat([m, layer.bias.grad.reshape(-1, 1)], dim=1)
        A = sum(torch.outer(r, r) for r in a) / a.shape[0]
        G = sum(torch.outer(r, r) for r in g) / batch
        result.append((A, G, m))
    return result


def _closure(model, x, y):
    def closure(backward=True):
        loss = nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        return loss.detach()

    return closure


def _data(model_kind: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    if model_kind == "mlp":
        x = torch.randn(7, 4, generator=g, dtype=DT)
    else:
        x = torch.randn(5, 2, 5, 5, generator=g, dtype=DT)
    y = torch.randint(0, 3, (x.shape[0],), generator=g)
    return x, y


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("kl_clip", [1e9, 1e-3])
def test_kfac_direction_matches_dense_damped_kronecker_solve(kind, kl_clip):
    model = _mlp() if kind == "mlp" else _convnet()
    damping, decay, lr = 0.003, 0.95, 0.1
    pre = KFACPreconditioner(
        model, damping=damping, factor_decay=decay, kl_clip=kl_clip, factor_update_freq=1, inv_update_freq=1
    )
    batches = [_data(kind, 1), _data(kind, 2)]  # two steps: the running average must be exercised
    factors = None
    for x, y in batches:
        ref = _reference_factors(model, x, y)
        if factors is None:
            factors = [(A, G) for A, G, _ in ref]
        else:
            factors = [
                (decay * A0 + (1 - decay) * A, decay * G0 + (1 - decay) * G)
                for (A0, G0), (A, G, _) in zip(factors, ref, strict=True)
            ]
        _closure(model, x, y)()
        pre.step(lr)

    expected, vg = [], 0.0
    for (A, G), (_, _, m) in zip(factors, ref, strict=True):
        dense = torch.kron(G, A) + damping * torch.eye(G.shape[0] * A.shape[0], dtype=DT)
        v = torch.linalg.solve(dense, m.reshape(-1)).reshape(m.shape)
        expected.append(v)
        vg += float((v * m).sum())
    nu = min(1.0, (kl_clip / (lr**2 * vg)) ** 0.5)
    if kl_clip < 1:
        assert nu < 1.0, "the small kl_clip case must actually clip"
    layers = [m for m in model if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(layers) == len(expected) == len(pre.layers)
    for layer, v in zip(layers, expected, strict=True):
        got = layer.weight.grad.reshape(layer.weight.shape[0], -1)
        if layer.bias is not None:
            got = torch.cat([got, layer.bias.grad.reshape(-1, 1)], dim=1)
        torch.testing.assert_close(got, nu * v, rtol=1e-5, atol=1e-12)


def test_factors_are_recorded_only_when_an_update_is_due():
    model = _mlp()
    pre = KFACPreconditioner(model, factor_update_freq=3, inv_update_freq=3)
    x, y = _data("mlp", 0)
    seen = []
    for _ in range(6):
        _closure(model, x, y)()
        seen.append(pre.layers[0].x is not None)
        pre.step(0.1)
    assert seen == [True, False, False, True, False, False]
    assert pre.eigen_count == 2 * 3 * 2  # (A, G) x 3 layers x 2 inverse updates


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 3)).to(DT)


def test_other_parameters_get_plain_sgd():
    """BatchNorm parameters are not K-FAC layers: their step is SGD on the raw gradient."""
    x, y = _data("mlp", 0)
    reference = _bn_model()
    nn.functional.cross_entropy(reference(x), y).backward()
    model = _bn_model()
    opt = build_optimizer("kfac", model, lr=0.1, momentum=0.0)
    opt.step(_closure(model, x, y))
    for name in ("1.weight", "1.bias"):
        p_ref = dict(reference.named_parameters())[name]
        torch.testing.assert_close(dict(model.named_parameters())[name].detach(), p_ref.detach() - 0.1 * p_ref.grad)
    # ... while a K-FAC layer does not follow its raw gradient
    w_ref = reference[0].weight
    assert not torch.allclose(model[0].weight.detach(), w_ref.detach() - 0.1 * w_ref.grad, rtol=1e-3)


def test_state_dict_round_trip_resumes_identically():
    x, y = _data("conv", 3)
    a = _convnet()
    opt_a = build_optimizer("kfac", a, factor_update_freq=2, inv_update_freq=3)
    for _ in range(4):
        opt_a.step(_closure(a, x, y))
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)  # a real checkpoint: no tensor shared with opt_a
    buffer.seek(0)
    state = torch.load(buffer, weights_only=False)
    b = _convnet()
    b.load_state_dict(a.state_dict())
    opt_b = build_optimizer("kfac", b, factor_update_freq=2, inv_update_freq=3)
    opt_b.load_state_dict(state)
    for _ in range(3):
        opt_a.step(_closure(a, x, y))
        opt_b.step(_closure(b, x, y))
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


def test_greedy_assignment_gives_each_job_to_the_least_loaded_rank():
    # longest first: 8 -> r0, 7 -> r1, 6 -> r1 (7 < 8), 5 -> r0 (8 < 13), 4 -> r0 (13 = 13, lowest rank)
    assert assign_owners([5.0, 8.0, 4.0, 7.0, 6.0], 2) == [0, 0, 0, 1, 1]
    assert assign_owners([1.0, 1.0, 1.0], 1) == [0, 0, 0]
    assert sorted(assign_owners([1.0] * 6, 3)) == [0, 0, 1, 1, 2, 2]


def _plain_kfac_run(scale: float | None, give_scaler: bool = False) -> torch.Tensor:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = build_optimizer("kfac", model, lr=0.05, factor_update_freq=1, inv_update_freq=2).optimizer
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000) if scale else None
    if give_scaler:
        opt.preconditioner.grad_scaler = scaler
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        x, y = torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("scale", [1024.0, 65536.0])
def test_plain_driving_under_a_grad_scaler_is_kfac_on_the_unscaled_loss(scale: float) -> None:
    """HF Trainer / Lightning fp16: GradScaler unscales .grad but not the recorded output gradients, whose
    scale would enter G squared and stall training; the factor update divides it out (powers of two: exact)."""
    reference = _plain_kfac_run(None)
    with pytest.warns(UserWarning, match="loss scale"):
        measured = _plain_kfac_run(scale)
    assert torch.equal(measured, reference)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        given = _plain_kfac_run(scale, give_scaler=True)
    assert torch.equal(given, reference)


def test_a_cast_to_half_after_construction_is_refused_at_the_next_step() -> None:
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = build_optimizer("kfac", model, lr=0.05).optimizer
    x, y = torch.randn(4, 6), torch.randint(0, 3, (4,))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    model.half()
    opt.zero_grad()
    F.cross_entropy(model(x.half()).float(), y).backward()
    with pytest.raises(ValueError, match="float32 or float64"):
        opt.step()
