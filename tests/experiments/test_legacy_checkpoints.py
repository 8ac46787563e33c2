"""Checkpoints written by earlier layouts of the optimizer state resume bit-identically.

``tests/data/legacy_checkpoints.pt`` holds, per optimizer, the training checkpoint at step 10 of a
20-step run and the parameters at step 20, written by the code before each layout change:
K-FAC's factors outside the torch optimizer, the authors' state as lists under a string key (commit
74494dd), and MLBFGS's settings as strings (commit 2db9361). Long runs in progress resume from such
checkpoints, so a change that breaks this would change their numbers.
"""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.registry import build_optimizer
from tests.support import REPO

DATA = REPO / "tests" / "data" / "legacy_checkpoints.pt"
# registry defaults of the time that have changed since: the checkpoints' runs used them
DEFAULTS_WHEN_WRITTEN = {"mlbfgs": {"blocks": "layer"}}  # one block per layer until 2026-12-08


@pytest.mark.parametrize("name", ["mlbfgs", "kfac", "mlbfgs_authors"])
def test_old_checkpoint_resumes_bit_identically(name: str) -> None:
    saved = torch.load(DATA, weights_only=False)[name]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 6, generator=gen), torch.randint(0, 3, (16,), generator=gen)) for _ in range(20)]
    opt = build_optimizer(name, model, **{**DEFAULTS_WHEN_WRITTEN.get(name, {}), **saved["settings"]})
    model.load_state_dict(saved["checkpoint"]["model"])
    opt.load_state_dict(saved["checkpoint"]["opt"])
    for x, y in data[10:]:
        def closure(backward: bool = True, x=x, y=y) -> torch.Tensor:
            for p in model.parameters():
                p.grad = None
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss.detach()
        opt.step(closure)
    for got, want in zip(model.parameters(), saved["final"], strict=True):
        assert torch.equal(got.detach(), want)
