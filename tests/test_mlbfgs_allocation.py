"""After warm-up, an MLBFGS step allocates no tensor storage (torch profiler memory events)."""

import dataclasses

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from mlbfgs import MLBFGS


def allocations(fn, repeat: int = 4) -> list[str]:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(repeat):
            fn()
    return [e.name for e in prof.events() if e.cpu_memory_usage > 0]


def test_the_counter_sees_allocations() -> None:
    # the control: if this fails, the test below proves nothing
    x = torch.randn(100)
    assert allocations(lambda: x * 2)
    assert allocations(lambda: x.mul_(0.5))  # a Python scalar is wrapped into a new tensor


@pytest.mark.parametrize("norm", ["global", "kl", "none"])
@pytest.mark.parametrize("history_dtype", [None, torch.bfloat16])
def test_step_allocates_nothing_after_warmup(norm, history_dtype) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))
    groups = [
        {"params": list(model[0].parameters()), "weight_decay": 1e-4},
        {"params": list(model[2].parameters()), "momentum": 0.5},
    ]
    opt = MLBFGS(groups, lr=0.01, update_period=1, history_size=4, blocks="layer", direction_norm=norm,
                 history_dtype=history_dtype)
    grads = [torch.randn_like(p) * 0.01 + 0.1 * p.detach() for p in model.parameters()]

    def set_grads() -> None:
        for p, g in zip(model.parameters(), grads):
            p.grad = g + 0.05 * p.detach()

    for _ in range(8):  # fill the rings
        set_grads()
        opt.step()
    assert all(opt.block_state(b)["num_pairs"] == 4 for b in range(2))
    # T = 8 from step 9 on: step 9 forms a pair, steps 10-13 are active (t > T: the direction is
    # rescaled, the "kl" branch runs) and form none. T = 1000 would leave the rescaling off.
    opt.config = dataclasses.replace(opt.config, update_period=8)
    set_grads()
    opt.step()
    assert allocations(opt.step) == []
    assert opt._global_state()["step"] == 13  # steps 10-13 were profiled: t > T, no pair
