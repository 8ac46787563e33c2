"""Registry contract: names, config validation, the closure protocol and checkpoint round-trips."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from baselines import available_optimizers, build_optimizer, config_class, default_config
from baselines.sgd import NormalizedSGD
from tests.support.optional import optimizer_params

EXPECTED = ["sgd", "sgd_normalized", "adam", "adamw", "kfac", "slbfgs", "olbfgs", "sqn", "mlbfgs", "mlbfgs_authors",
            "slimqn_authors", "adamw_schedulefree", "muon", "soap", "shampoo"]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def _closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    def closure(backward: bool = True) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        if backward:
            model.zero_grad(set_to_none=False)
            loss.backward()
            return loss.detach()
        return loss

    return closure


def test_registry_lists_every_optimizer_of_the_comparison():
    assert available_optimizers() == EXPECTED


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="valid names") as info:
        build_optimizer("lbfgs_torch", _model())
    for name in EXPECTED:
        assert name in str(info.value)
    assert "'module.path:Class'" in str(info.value)  # the import-path form is named too


def test_import_path_goes_through_the_registry_but_is_not_listed():
    opt = build_optimizer("torch.optim:Adamax", _model(), lr=0.01)
    assert type(opt.optimizer) is torch.optim.Adamax and opt.name == "torch.optim:Adamax"
    assert "torch.optim:Adamax" not in available_optimizers()
    assert default_config("torch.optim:Adamax")["lr"] == 0.002  # the constructor's default
    with pytest.raises(ValueError, match="valid arguments") as info:
        build_optimizer("torch.optim:Adamax", _model(), learning_rate=0.1)
    assert "'lr'" in str(info.value)


@pytest.mark.parametrize("name", optimizer_params(EXPECTED))
def test_unknown_argument_lists_valid_arguments(name):
    with pytest.raises(ValueError, match="valid arguments") as info:
        build_optimizer(name, _model(), learning_rate=0.1)
    assert "'lr'" in str(info.value)
    assert "learning_rate" in str(info.value)


@pytest.mark.parametrize("name", optimizer_params(EXPECTED))
def test_every_optimizer_documents_its_defaults(name):
    cls = config_class(name)
    assert dataclasses.is_dataclass(cls)
    assert cls.__doc__ and len(cls.__doc__) > 20
    defaults = default_config(name)
    assert defaults["lr"] > 0


@pytest.mark.parametrize(
    "name, bad",
    [
        ("sgd", {"lr": -0.1}),
        ("sgd", {"momentum": 1.5}),
        ("sgd", {"nesterov": True, "momentum": 0.0}),
        ("sgd_normalized", {"weight_decay": -1.0}),
        ("adam", {"betas": (0.9, 1.0)}),
        ("adamw", {"eps": 0.0}),
        ("kfac", {"damping": 0.0}),
        ("kfac", {"factor_decay": 1.0}),
        ("kfac", {"inv_update_freq": 0}),
        ("olbfgs", {"history_size": 0}),
        ("olbfgs", {"tau": -1.0}),
        ("sqn", {"update_period": 0}),
        ("sqn", {"history_size": -1}),
        ("slbfgs", {"history_size": 0}),
        ("mlbfgs", {"beta": 1.0}),
        ("mlbfgs_authors", {"timing": "late"}),
        ("mlbfgs_authors", {"beta": 1.0}),
        ("slimqn_authors", {"history_size": 0}),
    ],
)
def test_invalid_values_raise_value_error_naming_the_argument(name, bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key.split("[")[0]):
        build_optimizer(name, _model(), **bad)


def test_non_module_model_is_rejected():
    with pytest.raises(ValueError, match="nn.Module"):
        build_optimizer("sgd", [torch.zeros(3, requires_grad=True)])


def test_step_requires_a_closure():
    opt = build_optimizer("sgd", _model())
    with pytest.raises(ValueError, match="closure"):
        opt.step(None)


def test_sgd_step_matches_manual_momentum_update():
    model = _model()
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    ref = [p.detach().clone() for p in model.parameters()]
    opt = build_optimizer("sgd", model, lr=0.05, momentum=0.9, weight_decay=0.01)
    bufs = [torch.zeros_like(p) for p in ref]
    for _ in range(3):
        # manual: gradient at the reference point
        ref_model = _model()
        with torch.no_grad():
            for p, r in zip(ref_model.parameters(), ref, strict=True):
                p.copy_(r)
        loss = nn.functional.cross_entropy(ref_model(x), y)
        grads = torch.autograd.grad(loss, list(ref_model.parameters()))
        for i, g in enumerate(grads):
            d = g + 0.01 * ref[i]
            bufs[i] = 0.9 * bufs[i] + d
            ref[i] = ref[i] - 0.05 * bufs[i]
        opt.step(_closure(model, x, y))
    for p, r in zip(model.parameters(), ref, strict=True):
        torch.testing.assert_close(p.detach(), r, rtol=1e-5, atol=1e-6)
    assert opt.grad_evals == 3


def test_normalized_sgd_divides_by_the_global_gradient_norm():
    torch.manual_seed(1)
    p1 = torch.randn(5, requires_grad=True)
    p2 = torch.randn(2, 3, requires_grad=True)
    g1, g2 = torch.randn(5), torch.randn(2, 3)
    x1, x2 = p1.detach().clone(), p2.detach().clone()
    opt = NormalizedSGD([p1, p2], lr=0.1, momentum=0.5, weight_decay=0.1)
    b1, b2 = torch.zeros(5), torch.zeros(2, 3)
    for _ in range(2):
        p1.grad, p2.grad = g1.clone(), g2.clone()
        d1, d2 = g1 + 0.1 * x1, g2 + 0.1 * x2
        norm = torch.sqrt((d1**2).sum() + (d2**2).sum())
        b1, b2 = 0.5 * b1 + d1 / norm, 0.5 * b2 + d2 / norm
        x1, x2 = x1 - 0.1 * b1, x2 - 0.1 * b2
        opt.step()
    torch.testing.assert_close(p1.detach(), x1)
    torch.testing.assert_close(p2.detach(), x2)


def test_sgd_is_not_normalised():
    """Plain ``sgd`` must follow the raw gradient: scaling the loss scales the first step."""
    steps = []
    for scale in (1.0, 10.0):
        model = _model()
        before = [p.detach().clone() for p in model.parameters()]
        opt = build_optimizer("sgd", model, lr=0.01)
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))

        def closure(backward=True, model=model, scale=scale, x=x, y=y, opt=opt):
            loss = scale * nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            return loss.detach()

        opt.step(closure)
        steps.append(sum((p.detach() - b).norm() ** 2 for p, b in zip(model.parameters(), before, strict=True)))
    ratio = (steps[1] / steps[0]).sqrt().item()
    assert ratio == pytest.approx(10.0, rel=1e-4)


def test_mlbfgs_history_dtype_by_name() -> None:
    import torch

    from baselines import build_optimizer

    model = torch.nn.Linear(3, 2)
    opt = build_optimizer("mlbfgs", model, history_dtype="bfloat16")
    assert opt.optimizer.config.history_dtype == torch.bfloat16
    import pytest

    with pytest.raises(ValueError, match="history_dtype"):
        build_optimizer("mlbfgs", model, history_dtype="int8")


def test_mlbfgs_blocks_authors_uses_the_authors_partition() -> None:
    from baselines.mlbfgs_authors import authors_blocks

    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 6), torch.nn.ReLU(),
                                torch.nn.Linear(6, 2))
    opt = build_optimizer("mlbfgs", model, blocks="authors").optimizer
    inside, outside = authors_blocks(model)
    assert [[id(p) for p in b] for b in opt.blocks] == [[id(p) for p in b] for b in inside + [outside]]
    assert len(opt.blocks) == 2  # the middle layer; the stem and the classifier together


def test_the_registry_builds_mlbfgs_with_the_librarys_block_default() -> None:
    """One default in the library and the registry (chosen in results/figures/block_defaults.md; pinned on two
    blocks of different curvature in tests/mlbfgs/test_block_default.py)."""
    import inspect

    from mlbfgs import MLBFGS

    library = inspect.signature(MLBFGS).parameters["blocks"].default
    assert default_config("mlbfgs")["blocks"] == library == "model"
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    assert len(build_optimizer("mlbfgs", model).optimizer.blocks) == 1
