"""torch.optim's contract as training frameworks exercise it, for every registry optimizer and block mode.

Each case replays what a framework does to an optimizer it did not build, taken from reports against
PyTorch, Lightning, DeepSpeed, verl, SAM and transformers; ``torch.optim.SGD`` and ``Adam`` handle
all of them:

- state moved between devices and back (RL frameworks offloading it between rollouts, Lightning's
  ``_optimizer_to_device``, the ``t.data = t.data.to(dev)`` helper); a copy at another address
  stands in for the round trip on a machine with one device;
- the model cast after the optimizer was built (``model.double()``, ``.cuda()`` takes the same path);
- the state cleared or replaced by an empty one (ReLoRA-style resets);
- tensors appended to, or swapped in, ``param_groups`` (DeepSpeed ZeRO's flat copies);
- optimizer wrappers that copy the constructor's arguments into every group (SAM,
  ``ZeroRedundancyOptimizer``);
- the optimizer driven plainly (``loss.backward(); opt.step()``, or ``opt.step(closure)``), as
  HF Trainer and Lightning drive the ``torch.optim.Optimizer`` they are handed;
- ``load_state_dict`` post-hooks, which must see the loaded state;
- frozen integer parameters (8-bit weights under LoRA adapters) inside ``model.parameters()``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.registry import build_optimizer
from mlbfgs import MLBFGS
from tests.support.conformance import (
    CASES,
    DATA,
    LIBRARY,
    LIBRARY_KW,
    assert_params_close,
    assert_resumes,
    closure_for,
    make_model,
    make_opt,
    move_state,
    same,
    snapshot,
    train,
)

#: optimizers that take more than one evaluation per step, so they need the suite's closure(backward=...)
CLOSURE_ONLY = {"olbfgs", "sqn"}


# ---------------------------------------------------------------- state moved and back
@pytest.mark.parametrize("how", ["new_containers", "top_level_tensors", "data_assignment"])
@pytest.mark.parametrize("case", CASES)
def test_state_moved_and_back_mid_training_is_the_state_the_next_step_uses(case: str, how: str) -> None:
    ref, model = make_model(), make_model()
    opt_ref, opt = make_opt(case, ref), make_opt(case, model)
    train(opt_ref, ref, 8)
    train(opt, model, 8)
    move_state(opt.optimizer, model, how)
    train(opt_ref, ref, 8, start=8)
    train(opt, model, 8, start=8)
    assert_params_close(ref, model, rtol=0, atol=0)
    assert_resumes(case, opt, model, 16, 4)  # and a checkpoint written after the move is the live state


# ---------------------------------------------------------------- model cast after construction
@pytest.mark.parametrize("case", CASES)
def test_model_cast_after_construction_trains_as_if_built_after_it(case: str) -> None:
    ref = make_model().double()
    opt_ref = make_opt(case, ref)
    model = make_model()
    opt = make_opt(case, model)
    model.double()  # `.cuda()` and `.to(device)` take the same path (nn.Module._apply)
    train(opt_ref, ref, 10)
    train(opt, model, 10)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert_params_close(ref, model, rtol=0, atol=0)


@pytest.mark.parametrize("case", LIBRARY + ["mlbfgs"])
def test_model_cast_mid_training_carries_the_state_over(case: str) -> None:
    """The state follows its parameters, as load_state_dict casts it: compared with a run that saved its
    state and loaded it into the cast model."""
    model = make_model()
    opt = make_opt(case, model)
    train(opt, model, 7)
    saved, weights = copy.deepcopy(opt.state_dict()), copy.deepcopy(model.state_dict())
    model.double()
    train(opt, model, 7, start=7)
    ref = make_model().double()
    ref.load_state_dict(weights)
    ropt = make_opt(case, ref)
    ropt.load_state_dict(saved)
    train(ropt, ref, 7, start=7)
    assert_params_close(ref, model, rtol=0, atol=0)


# ---------------------------------------------------------------- state cleared
@pytest.mark.parametrize("how", ["clear", "new_defaultdict"])
@pytest.mark.parametrize("case", CASES)
def test_cleared_state_restarts_like_a_fresh_optimizer(case: str, how: str) -> None:
    model = make_model()
    opt = make_opt(case, model)
    train(opt, model, 8)
    ref = make_model()
    ref.load_state_dict(model.state_dict())
    opt_ref = make_opt(case, ref)
    if how == "clear":
        opt.optimizer.state.clear()
    else:
        opt.optimizer.state = defaultdict(dict)
    train(opt, model, 8, start=8)
    train(opt_ref, ref, 8, start=8)
    assert_params_close(ref, model, rtol=0, atol=0)


# ---------------------------------------------------------------- param_groups edited by hand
@pytest.mark.parametrize("case", CASES)
def test_a_parameter_appended_to_a_group_by_hand_trains(case: str) -> None:
    model = make_model()
    model[2].requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_opt(case, model, params=params) if case in LIBRARY else make_opt(case, model)
    train(opt, model, 5)
    model[2].requires_grad_(True)
    opt.optimizer.param_groups[0]["params"].extend(model[2].parameters())
    head = snapshot(model[2].parameters())
    train(opt, model, 8, start=5)
    assert all(not torch.equal(a, b) for a, b in zip(head, model[2].parameters())), "the appended head did not train"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _with_head_appended(case: str, seed: int = 0) -> tuple[nn.Module, Any]:
    model = make_model(seed)
    model[2].requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_opt(case, model, params=params) if case in LIBRARY else make_opt(case, model)
    model[2].requires_grad_(True)
    opt.optimizer.param_groups[0]["params"].extend(model[2].parameters())
    return model, opt


@pytest.mark.parametrize("when", ["before_a_step", "after_steps"])
@pytest.mark.parametrize("case", CASES)
def test_a_checkpoint_after_appending_by_hand_resumes(case: str, when: str) -> None:
    model, opt = _with_head_appended(case)
    if when == "after_steps":
        train(opt, model, 5)
    assert_resumes(case, opt, model, 5, 6, rebuild=lambda: _with_head_appended(case, seed=3))


@pytest.mark.parametrize("case", CASES)
def test_a_checkpoint_written_after_a_reset_resumes(case: str) -> None:
    model = make_model()
    opt = make_opt(case, model)
    train(opt, model, 6)
    opt.optimizer.state.clear()
    assert_resumes(case, opt, model, 6, 6)


@pytest.mark.parametrize("case", CASES)
def test_parameters_swapped_in_groups_train_or_name_what_changed(case: str) -> None:
    """DeepSpeed ZeRO puts its own copies in ``param_groups`` and copies gradients into them."""
    model = make_model()
    opt = make_opt(case, model)
    train(opt, model, 4)
    copies = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    originals = list(model.parameters())
    opt.optimizer.param_groups[0]["params"] = list(copies)
    try:
        for i in range(4, 10):
            closure = closure_for(model, i)

            def swapped(backward: bool = True, closure=closure) -> torch.Tensor:
                loss = closure(backward)
                if backward:
                    for c, p in zip(copies, originals, strict=True):
                        c.grad = p.grad.clone()
                return loss

            opt.step(swapped)
    except ValueError as err:
        assert "param_groups" in str(err) and "construction" in str(err), err
        return
    assert not same(snapshot(originals), copies), "the swapped-in tensors did not train"
    assert all(torch.isfinite(c).all() for c in copies)


# ---------------------------------------------------------------- wrappers copying settings into groups
@pytest.mark.parametrize("blocks", ["model", "layer", 2])
def test_groups_carrying_the_constructors_own_settings_are_accepted(blocks: Any) -> None:
    """SAM builds ``base_optimizer(self.param_groups, **kwargs)`` with every argument (and its own
    ``rho``) in each group; ZeroRedundancyOptimizer does the same with its defaults."""
    kw = {**LIBRARY_KW, "blocks": blocks, "damping": 0.02}
    ref, model = make_model(), make_model()
    opt_ref = MLBFGS(ref.parameters(), **kw)
    group = {"params": list(model.parameters()), "rho": 0.05, "adaptive": False,
             **{k: v for k, v in kw.items() if k != "blocks"}}
    opt = MLBFGS([group], **kw)
    for i in range(10):
        closure_for(ref, i)()
        opt_ref.step()
        closure_for(model, i)()
        opt.step()
    assert_params_close(ref, model, rtol=0, atol=0)
    with pytest.raises(ValueError, match="history_size"):
        MLBFGS([{**group, "history_size": 7}], **kw)


class _SAM(torch.optim.Optimizer):
    """Sharpness-aware minimisation as its popular implementation (davda54/sam) wraps a base optimizer."""

    def __init__(self, params: Any, base_optimizer: type, rho: float = 0.05, **kwargs: Any) -> None:
        super().__init__(params, dict(rho=rho, **kwargs))
        self.base_optimizer = base_optimizer(self.param_groups, **kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self) -> None:
        norm = torch.stack([p.grad.norm() for g in self.param_groups for p in g["params"] if p.grad is not None]).norm()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["old_p"] = p.data.clone()
                    p.add_(p.grad * (group["rho"] / (norm + 1e-12)))

    @torch.no_grad()
    def second_step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.data = self.state[p]["old_p"]  # a new storage under the parameter, every step
        self.base_optimizer.step()


@pytest.mark.parametrize("blocks", ["model", "layer", 2])
def test_sam_wrapping_mlbfgs_is_sam_on_mlbfgs(blocks: Any) -> None:
    kw = {**LIBRARY_KW, "blocks": blocks}
    ref, model = make_model(), make_model()
    opt_ref = MLBFGS(ref.parameters(), **kw)
    sam = _SAM(model.parameters(), MLBFGS, rho=0.05, **kw)
    for i in range(10):
        closure_for(model, i)()
        sam.first_step()
        closure_for(model, i)()
        sam.second_step()
        closure_for(ref, i)()  # the same, written out
        with torch.no_grad():
            norm = torch.stack([p.grad.norm() for p in ref.parameters()]).norm()
            old = [p.clone() for p in ref.parameters()]
            for p in ref.parameters():
                p.add_(p.grad * (0.05 / (norm + 1e-12)))
        closure_for(ref, i)()
        with torch.no_grad():
            for p, o in zip(ref.parameters(), old, strict=True):
                p.copy_(o)
        opt_ref.step()
    assert_params_close(ref, model, rtol=0, atol=0)


def test_zero_redundancy_optimizer_on_one_rank_is_the_plain_optimizer(tmp_path) -> None:
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        ref, model = make_model(), make_model()
        opt_ref = MLBFGS(ref.parameters(), **LIBRARY_KW)
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=MLBFGS, **LIBRARY_KW)
        for i in range(10):
            closure_for(ref, i)()
            opt_ref.step()
            closure_for(model, i)()
            opt.step()
        # ZeRO lists each group's parameters largest first, so the flat direction's norm sums in another order
        assert_params_close(ref, model, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- driven plainly
@pytest.mark.parametrize("style", ["backward_then_step", "step_with_closure"])
@pytest.mark.parametrize("case", CASES)
def test_driven_plainly_it_is_the_same_optimizer(case: str, style: str) -> None:
    """HF Trainer and Lightning call ``.step()`` after ``backward()`` (or ``.step(closure)``) on the
    ``torch.optim.Optimizer`` they are handed: it must be the registry's method, or refuse loudly."""
    ref, model = make_model(), make_model()
    opt_ref = make_opt(case, ref)
    inner = make_opt(case, model).optimizer
    train(opt_ref, ref, 10)
    try:
        for i in range(10):
            closure = closure_for(model, i)
            if style == "backward_then_step":
                closure()
                inner.step()
            else:
                inner.step(closure)
    except (ValueError, RuntimeError, TypeError) as err:
        assert case in CLOSURE_ONLY and "closure" in str(err), err
        return
    assert case not in CLOSURE_ONLY or style == "step_with_closure", f"{case} stepped without its closure"
    assert_params_close(ref, model, rtol=0, atol=0)


# ---------------------------------------------------------------- load_state_dict post-hooks
@pytest.mark.parametrize("case", CASES)
def test_load_state_dict_post_hooks_see_the_loaded_state(case: str) -> None:
    model = make_model()
    opt = make_opt(case, model)
    train(opt, model, 12)
    saved = copy.deepcopy(opt.optimizer.state_dict())
    fresh = make_opt(case, make_model())
    seen: list[dict] = []
    fresh.optimizer.register_load_state_dict_post_hook(lambda o: seen.append(copy.deepcopy(o.state_dict())))
    fresh.optimizer.load_state_dict(saved)
    assert len(seen) == 1
    _assert_same_state(seen[0], fresh.optimizer.state_dict())
    _assert_same_state(seen[0], saved)


def _assert_same_state(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b.to(a.dtype)), (a, b)
    elif isinstance(a, dict):
        assert set(a) == set(b), (sorted(map(str, a)), sorted(map(str, b)))
        for k in a:
            _assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same_state(x, y)
    else:
        assert a == b, (a, b)


# ---------------------------------------------------------------- frozen integer parameters
class _Quantised(nn.Module):
    """An int8 weight (frozen, as 8-bit loading leaves it) under a trainable adapter."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qweight = nn.Parameter(torch.randint(-8, 8, (8, 6), dtype=torch.int8), requires_grad=False)
        self.adapter = nn.Linear(6, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(x @ self.qweight.float().T * 0.1 + self.adapter(x)))


@pytest.mark.parametrize("case", CASES)
def test_frozen_integer_parameters_are_skipped(case: str) -> None:
    model = _Quantised()
    if case in LIBRARY:  # what a user writes: every parameter of the model
        blocks = case.split("-")[1]
        opt = make_opt(case, model, params=list(model.parameters()), blocks=int(blocks) if blocks.isdigit() else blocks)
    else:
        opt = make_opt(case, model)
    frozen, trained = model.qweight.detach().clone(), snapshot(model.head.parameters())
    for i in range(10):
        x, y = DATA[i % len(DATA)]

        def closure(backward: bool = True, x=x, y=y) -> torch.Tensor:
            loss = F.cross_entropy(model(x), y)
            if not backward:
                return loss
            model.zero_grad(set_to_none=True)
            loss.backward()
            return loss.detach()

        opt.step(closure)
    assert torch.equal(frozen, model.qweight)
    assert not same(trained, model.head.parameters())
    assert all(torch.isfinite(p).all() for p in model.parameters() if p.is_floating_point())


def test_build_optimizer_accepts_a_model_with_frozen_integer_parameters() -> None:
    build_optimizer("mlbfgs", _Quantised(), lr=0.05)
