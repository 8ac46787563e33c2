"""The optimizers and the small problem the conformance cases run on (tests/baselines/test_conformance*.py).

Every optimizer is driven the way the suite drives it (``TrainingOptimizer.step(closure)``), on a
two-layer MLP with settings that form curvature pairs within a few steps. ``MLBFGS-<blocks>`` is
the library class itself with ``blocks`` = "model", "layer" or 2.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.base import TrainingOptimizer
from baselines.quasi_newton import QuasiNewtonTraining
from baselines.registry import build_optimizer, default_config, installed_optimizers
from mlbfgs import MLBFGS

LIBRARY = ["MLBFGS-model", "MLBFGS-layer", "MLBFGS-2"]
CASES = installed_optimizers() + LIBRARY  # a peer without its optional library is left out

# Settings under which every method forms curvature within a few steps.
FAST: dict[str, dict] = {
    "sgd": dict(lr=0.05),
    "sgd_normalized": dict(lr=0.05),
    "adam": dict(lr=0.01),
    "adamw": dict(lr=0.01),
    "kfac": dict(lr=0.05, factor_update_freq=1, inv_update_freq=2),
    "slbfgs": dict(lr=0.05, update_period=2, history_size=3),
    "olbfgs": dict(lr=0.05, history_size=3),
    "sqn": dict(lr=0.05, update_period=2, history_size=3),
    "mlbfgs": dict(lr=0.05, update_period=2, history_size=3, beta=0.5),
    "adamw_schedulefree": dict(lr=0.01),
    "muon": dict(lr=0.02, adamw_lr=0.01),
    # SOAP normalises every coordinate of its eigenbases, tiny ones included, so this small model's trajectory
    # amplifies float32 rounding about 1e4-fold: a larger eps tames the tiny coordinates (loading across
    # dtypes), and an lr exact in float32 (2**-7) makes a tensor lr the same number as the float
    "soap": dict(lr=2**-7, precondition_frequency=2, eps=1e-3),
    # blocks of 4: the test model's tensors (at most 48 elements) are otherwise left to the graft
    "shampoo": dict(lr=0.01, preconditioning_compute_steps=2, start_preconditioning_step=2, block_size=4),
    "mlbfgs_authors": dict(lr=0.05, update_period=2, history_size=3, beta=0.5),
    "slimqn_authors": dict(lr=0.05, update_period=2, history_size=3, beta=0.5),
}
# Optimizers whose update of a parameter reads only that parameter's gradient (torch.optim's own):
# they may train sharded parameters. The others couple parameters (a norm over all of them, blocks,
# Kronecker factors), which a shard cannot compute alone, so they must refuse them.
ELEMENTWISE = {"sgd", "adam", "adamw"}
# Optimizers whose state is per parameter only (no record under the first parameter), created lazily at
# the first step as torch.optim.Adam's is.
PER_PARAMETER_STATE = ELEMENTWISE | {"sgd_normalized", "adamw_schedulefree", "muon", "soap", "shampoo"}
LAZY_STATE = {"adam", "adamw", "adamw_schedulefree", "muon", "soap", "shampoo"}
# Optimizers whose curvature statistics (sums of g g^T) cannot hold a gradient of 1e30 and say so by name.
OVERFLOW_REFUSED = {"soap": "scale the loss down"}
# Optimizers that compute matrix inverse roots iteratively (float32 rounding grows a few-fold through them).
MATRIX_ROOTS = {"shampoo"}
LIBRARY_KW = dict(lr=0.05, update_period=2, history_size=3, beta=0.5)
# A setting that shapes the curvature state; loading a state saved with another value must fail.
SHAPING_SETTING = {name: ("history_size", 4) for name in
                   ("slbfgs", "olbfgs", "sqn", "mlbfgs", "mlbfgs_authors", "slimqn_authors", *LIBRARY)}
SHAPING_SETTING["shampoo"] = ("block_size", 3)


def make_model(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def make_opt(case: str, model: nn.Module, params: list[torch.Tensor] | None = None, **over) -> TrainingOptimizer:
    if case in LIBRARY:
        blocks = case.split("-")[1]
        kw = {**LIBRARY_KW, "blocks": int(blocks) if blocks.isdigit() else blocks, **over}
        params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
        return QuasiNewtonTraining(case, MLBFGS(params, **kw), 1.0, model)
    assert params is None, "registry optimizers are built from the model's trainable parameters"
    return build_optimizer(case, model, **{**FAST[case], **over})


def has_setting(case: str, name: str) -> bool:
    return case in LIBRARY or name in default_config(case)


_GEN = torch.Generator().manual_seed(1)
DATA = [(torch.randn(16, 6, generator=_GEN), torch.randint(0, 3, (16,), generator=_GEN)) for _ in range(8)]


def closure_for(model: nn.Module, i: int, loss_fn: Callable | None = None) -> Callable:
    x, y = DATA[i % len(DATA)]
    x = x.to(next(model.parameters()).dtype)
    params = list(model.parameters())

    def closure(backward: bool = True) -> torch.Tensor:
        loss = loss_fn(model, x, y) if loss_fn else F.cross_entropy(model(x), y)
        if not backward:
            return loss
        for p in params:
            p.grad = None
        if loss.requires_grad:
            loss.backward()
        return loss.detach()

    return closure


def train(opt: TrainingOptimizer, model: nn.Module, steps: int, start: int = 0,
          loss_fn: Callable | None = None) -> None:
    for i in range(start, start + steps):
        opt.step(closure_for(model, i, loss_fn))


def snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def same(a: list[torch.Tensor], b) -> bool:
    return all(torch.equal(x, y.detach()) for x, y in zip(a, b, strict=True))


def assert_params_close(a: nn.Module, b: nn.Module, **tol) -> None:
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), **tol)


# ---------------------------------------------------------------- how frameworks move optimizer state
def _moved(x: Any) -> Any:
    """Lightning's ``apply_to_collection``: new containers, every tensor a copy at a new address."""
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, dict):
        return {k: _moved(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_moved(v) for v in x)
    return x


def _tensors(x: Any) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        return [x]
    if isinstance(x, dict):
        return [t for v in x.values() for t in _tensors(v)]
    if isinstance(x, (list, tuple)):
        return [t for v in x for t in _tensors(v)]
    return []


def move_state(opt: torch.optim.Optimizer, model: nn.Module, how: str) -> None:
    if how == "new_containers":  # Lightning's _optimizer_to_device
        for p, st in list(opt.state.items()):
            opt.state[p] = _moved(st)
    elif how == "top_level_tensors":  # the RL frameworks' offload loop
        for st in opt.state.values():
            for k, t in st.items():
                if isinstance(t, torch.Tensor):
                    st[k] = t.clone()
    elif how == "data_assignment":  # the `.data = .data.to(dev)` helper, on the state and the model
        for t in _tensors(dict(opt.state)):
            t.data = t.data.clone()
        for p in model.parameters():
            p.data = p.data.clone()
    else:
        raise AssertionError(how)


def assert_resumes(case: str, opt: TrainingOptimizer, model: nn.Module, start: int, steps: int,
                   rebuild: Callable[[], tuple[nn.Module, TrainingOptimizer]] | None = None) -> None:
    """A checkpoint of ``opt`` and ``model`` taken now, loaded into a rebuilt pair (default: a fresh model
    and ``make_opt(case, ...)``), continues exactly as the original does for ``steps`` steps."""
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    resumed, ropt = rebuild() if rebuild is not None else _fresh(case)
    resumed.load_state_dict(weights)
    ropt.load_state_dict(saved)
    train(opt, model, steps, start=start)
    train(ropt, resumed, steps, start=start)
    assert_params_close(model, resumed, rtol=0, atol=0)


def _fresh(case: str) -> tuple[nn.Module, TrainingOptimizer]:
    model = make_model(seed=3)
    return model, make_opt(case, model)
