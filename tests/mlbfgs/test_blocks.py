"""Block-diagonal curvature: a block's direction depends only on its own history."""

import pytest
import torch

from mlbfgs import MLBFGS, assign_blocks, build_blocks, layer_blocks, load_imbalance


def two_layer_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def run(blocks: str, perturb: float) -> list[torch.Tensor]:
    """Quadratic per parameter; ``perturb`` changes only the second layer's quadratic."""
    model = two_layer_model()
    params = list(model.parameters())
    opt = MLBFGS(params, lr=0.05, update_period=3, beta=0.9, blocks=blocks, direction_norm="none")
    gen = torch.Generator().manual_seed(1)
    scales = [torch.rand(p.shape, generator=gen) + 0.5 for p in params]
    targets = [torch.randn(p.shape, generator=gen) for p in params]
    for i in (2, 3):
        scales[i] = scales[i] * (1 + perturb)
        targets[i] = targets[i] + perturb
    for _ in range(40):
        for p, a, c in zip(params, scales, targets):
            p.grad = a * (p.detach() - c)
        opt.step()
    return [p.detach().clone() for p in params]


def test_layer_blocks_are_independent() -> None:
    base = run("layer", perturb=0.0)
    other = run("layer", perturb=3.0)
    torch.testing.assert_close(base[0], other[0], rtol=0, atol=0)
    torch.testing.assert_close(base[1], other[1], rtol=0, atol=0)
    assert not torch.equal(base[2], other[2])


def test_one_model_block_couples_layers() -> None:
    # the control: with one block, the second layer's gradients change the first layer's update
    base = run("model", perturb=0.0)
    other = run("model", perturb=3.0)
    assert not torch.equal(base[0], other[0])


def test_build_blocks_modes() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    params = list(model.parameters())
    assert [len(b) for b in build_blocks(params, "model")] == [len(params)]
    assert [len(b) for b in build_blocks(params, "layer")] == [4, 2]  # conv w,b + bn w,b ; linear w,b
    assert [len(b) for b in layer_blocks(model)] == [2, 2, 2]
    blocks = build_blocks(params, 3)
    assert len(blocks) == 3 and [p for b in blocks for p in b] == params
    explicit = build_blocks(params, [params[:1], params[1:]])
    assert len(explicit) == 2


@pytest.mark.parametrize(
    "spec,match",
    [("rows", "blocks"), (0, "blocks"), (99, "blocks"), ([[]], "blocks"), (True, "blocks")],
)
def test_bad_blocks_raise(spec, match) -> None:
    params = list(two_layer_model().parameters())
    with pytest.raises(ValueError, match=match):
        build_blocks(params, spec)


def test_explicit_blocks_must_cover_params() -> None:
    params = list(two_layer_model().parameters())
    with pytest.raises(ValueError, match="exactly"):
        build_blocks(params, [params[:2]])
    with pytest.raises(ValueError, match="more than one"):
        build_blocks(params, [params, params[:1]])


def test_assign_blocks_balances_greedily() -> None:
    sizes = [10, 7, 5, 3, 3, 2]
    owners = assign_blocks(sizes, 2)
    loads = [sum(s for s, o in zip(sizes, owners) if o == r) for r in range(2)]
    assert sorted(loads) == [15, 15]
    assert load_imbalance(sizes, owners, 2) == pytest.approx(1.0)
    assert assign_blocks(sizes, 1) == [0] * 6


def _bad_blocks(ps: list) -> dict:
    return {
        "a float": (2.0, "got 2.0 (float)"),
        "a flat list": (ps, "got a list of tensors; for one block pass blocks=[params]"),
        "one left out": ([[ps[0]]], "parameter 1 (shape (3,)) is in no block"),
        "an integer tensor": ([[ps[0], ps[1], torch.zeros(2, dtype=torch.int8)]], "integer parameters are skipped"),
        "a foreign tensor": ([[ps[0], ps[1], torch.zeros(2)]], "not one of the optimizer's"),
    }


@pytest.mark.parametrize("kind", ["a float", "a flat list", "one left out", "an integer tensor", "a foreign tensor"])
def test_bad_blocks_name_what_is_wrong_and_what_is_allowed(kind: str) -> None:
    ps = [torch.nn.Parameter(torch.zeros(3, 3)), torch.nn.Parameter(torch.zeros(3))]
    spec, message = _bad_blocks(ps)[kind]
    with pytest.raises(ValueError, match="blocks") as err:
        MLBFGS(ps, lr=0.1, blocks=spec)
    assert message in str(err.value)


def test_only_integer_parameters_are_refused_saying_they_are_skipped() -> None:
    frozen = torch.nn.Parameter(torch.zeros(2, dtype=torch.int8), requires_grad=False)
    with pytest.raises(ValueError, match="integer and bool parameters are skipped"):
        MLBFGS([frozen], lr=0.1)
