"""The block default, pinned on two blocks of known, very different curvature.

The default was chosen by the rule of ``analysis/block_defaults.py`` over the three long workloads
(``results/figures/block_defaults.md``): one block for the whole model, in the library and the registry. With
blocks per layer, each block's step is scaled at once by its own gamma_b, about 1/mu_b; on the ResNet those
scales come from noisy pairs and the global rescaling hands the classifier almost none of the step
(``results/figures/resnet_diagnosis.md``). With one block, one gamma scales every layer, and the split of the
step between layers moves away from the gradient's only through curvature pairs over the whole model: one BFGS
matrix. The problem: ``f = a_0 |X_0|^2 / 2 + a_1 |X_1|^2 / 2`` over two weight matrices with ``a = (1, 0.02)``,
started where both gradients have the same norm. Steps and shares are read from the parameters themselves, not
from the optimizer's records.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mlbfgs import MLBFGS
from tests.support.dense_bfgs import damping_phi, one_pair_inverse_hessian

A = (1.0, 0.02)  # inside the default curvature bounds (0.01, 1.5): damped only by phi = 1 - tau0


def _start() -> list[torch.Tensor]:
    torch.manual_seed(0)
    x = [torch.randn(shape, dtype=torch.float64) for shape in ((3, 2), (2, 2))]  # two layers' matrices
    # equal gradient norms: |a_b x_b| = 1 for both blocks
    return [(t / (a * t.norm())).requires_grad_(True) for a, t in zip(A, x, strict=True)]


def _loss(x: list[torch.Tensor]) -> torch.Tensor:
    return sum(0.5 * a * (t * t).sum() for a, t in zip(A, x, strict=True))  # type: ignore[return-value]


def _share_ratios(**blocks: object) -> list[list[float]]:
    """Per step after the first pair: each block's share of the step |dx_b|^2/|dx|^2 divided by its share of
    the gradient |g_b|^2/|g|^2."""
    x = _start()
    opt = MLBFGS(x, lr=1e-3, momentum=0.0, beta=0.0, update_period=1, history_size=2, **blocks)  # type: ignore[arg-type]
    ratios = []
    for step in range(8):
        before = [t.detach().clone() for t in x]
        opt.zero_grad()
        _loss(x).backward()
        g2 = [float(t.grad.norm()) ** 2 for t in x]  # type: ignore[union-attr]
        opt.step()
        dx2 = [float((b - t.detach()).norm()) ** 2 for b, t in zip(before, x, strict=True)]
        if step >= 1:
            ratios.append([(d / sum(dx2)) / (g / sum(g2)) for d, g in zip(dx2, g2, strict=True)])
    return ratios


def test_the_default_is_one_block() -> None:
    """(The registry's mlbfgs shares it: tests/baselines/test_registry.py.)"""
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert len(MLBFGS(model.parameters(), lr=0.1).blocks) == 1


def test_the_default_splits_the_first_step_by_one_scale_and_layers_by_their_own() -> None:
    """At the first step with a pair, one block keeps the steep layer at 0.39 of its gradient's share (one
    gamma, one rank-two correction); one block per layer cuts it at once to 2 / (1 + (â_0/â_1)^2) = 0.0018 (â
    the damped curvatures, phi a + 1 - phi with phi = 1 - tau0; to 1%, the gradients' norms having drifted
    from equal), and keeps it there. Later pairs move the default's split too, as one BFGS matrix (the next
    test)."""
    default, layer = _share_ratios()[0], _share_ratios(blocks="layer")
    assert default[0] > 0.1, default
    for step in layer:
        damped = [damping_phi(a) * a + 1 - damping_phi(a) for a in A]
        assert math.isclose(step[0], 2 / (1 + (damped[0] / damped[1]) ** 2), rel_tol=1e-2), step


def test_the_default_direction_is_one_dense_bfgs_matrix_over_all_parameters() -> None:
    """Step 2 against a dense float64 BFGS update of gamma I by the one pair over the concatenated parameters:
    s = x_2 - x_1, y = A s, damped as the spec's step 3, d = H g_2, step lr d / |d|."""
    x = _start()
    opt = MLBFGS(x, lr=1e-3, momentum=0.0, beta=0.0, update_period=1, history_size=1)
    iterates, grads = [torch.cat([t.detach().flatten() for t in x])], []
    for _ in range(2):
        opt.zero_grad()
        _loss(x).backward()
        grads.append(torch.cat([t.grad.detach().flatten() for t in x]))  # type: ignore[union-attr]
        opt.step()
        iterates.append(torch.cat([t.detach().flatten() for t in x]))
    a = torch.cat([torch.full((t.numel(),), c, dtype=torch.float64) for c, t in zip(A, x, strict=True)])
    s = iterates[1] - iterates[0]
    y = a * s
    phi = damping_phi(float(s @ y) / float(s @ s))
    y_hat = phi * y + (1 - phi) * s
    d = one_pair_inverse_hessian(s, y_hat) @ grads[1]
    assert torch.allclose(iterates[1] - iterates[2], 1e-3 * d / d.norm(), rtol=1e-9, atol=1e-15)
    assert not math.isclose(float(d[0] / grads[1][0]), float(d[-1] / grads[1][-1]), rel_tol=0.1)  # not a rescaled g
