"""The optimizer the allocation tests profile (CPU: test_mlbfgs_allocation.py, CUDA: test_mlbfgs_cuda.py).

Three blocks (``blocks="layer"``): two with full rings, and an idle one whose gradient is always zero,
so its pairs are rejected (s = 0) and the steps take the branches for blocks without pairs. After
:func:`warmed_optimizer` the next four steps (10-13) are active (t > T = 8: the direction is rescaled)
and form no pair; step 9, the last warm-up step, formed one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from mlbfgs import MLBFGS

PROFILED_STEPS = 4


def warmed_optimizer(device: str, norm: str, history_dtype: torch.dtype | None) -> tuple[MLBFGS, Callable[[], None]]:
    """``(opt, check)``: the optimizer after warm-up, and a check to call after the profiled steps that they
    were the active, pair-free steps 10-13 with the idle block still without pairs."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5),
                                torch.nn.Linear(5, 3)).to(device)
    groups = [
        {"params": list(model[0].parameters()), "weight_decay": 1e-4},
        {"params": list(model[2].parameters()), "momentum": 0.5},
        {"params": list(model[3].parameters()), "weight_decay": 0.0},  # the idle block
    ]
    opt = MLBFGS(groups, lr=0.01, update_period=1, history_size=4, blocks="layer", direction_norm=norm,
                 history_dtype=history_dtype)
    params = list(model.parameters())
    grads = [torch.randn_like(p) * 0.01 + 0.1 * p.detach() for p in params[:4]]

    def set_grads() -> None:
        for p, g in zip(params[:4], grads, strict=True):
            p.grad = g + 0.05 * p.detach()
        for p in params[4:]:
            p.grad = torch.zeros_like(p)

    for _ in range(8):  # fill the rings
        set_grads()
        opt.step()
    assert [opt.block_state(b)["num_pairs"] for b in range(3)] == [4, 4, 0]
    # T = 8 from step 9 on: step 9 forms pairs, steps 10-13 are active and form none (with T = 1000
    # the profiled steps would skip the rescaling)
    opt.config = dataclasses.replace(opt.config, update_period=8)
    set_grads()
    opt.step()

    def check() -> None:
        assert opt._global_state()["step"] == 9 + PROFILED_STEPS
        assert [opt.block_state(b)["num_pairs"] for b in range(3)] == [4, 4, 0]

    return opt, check
