"""Construction grows linearly with the number of parameter tensors (counted in function calls, not
seconds: timed assertions do not belong in tests; the seconds are ``experiments/bench/construction.py``'s)."""

from __future__ import annotations

import cProfile
import pstats

import pytest
import torch

from mlbfgs import MLBFGS


def _calls(n: int, blocks: str) -> int:
    params = [torch.nn.Parameter(torch.zeros((4, 4) if i % 2 == 0 else (4,))) for i in range(n)]
    for p in params:
        p.grad = torch.ones_like(p)
    prof = cProfile.Profile()
    prof.enable()
    opt = MLBFGS(params, lr=0.1, blocks=blocks)
    opt.step()
    prof.disable()
    return int(pstats.Stats(prof).total_calls)  # type: ignore[attr-defined]


@pytest.mark.parametrize("blocks", ["model", "layer"])
def test_construction_and_first_step_are_linear_in_the_tensors(blocks: str) -> None:
    small, large = _calls(250, blocks), _calls(1000, blocks)
    assert large <= 4.5 * small, f"{large} calls for 1000 tensors against {small} for 250"
