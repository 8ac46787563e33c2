"""After warm-up, an MLBFGS step allocates no tensor storage (torch profiler memory events)."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from tests.support.allocation_setup import PROFILED_STEPS, warmed_optimizer


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


@pytest.mark.parametrize("norm", ["global", "kl", "none", "block"])
@pytest.mark.parametrize("history_dtype", [None, torch.bfloat16])
def test_step_allocates_nothing_after_warmup(norm, history_dtype) -> None:
    opt, check = warmed_optimizer("cpu", norm, history_dtype)
    assert allocations(opt.step, PROFILED_STEPS) == []
    check()
