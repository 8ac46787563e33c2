"""MLBFGS on a CUDA device (marked ``cuda``, skipped without one; ``bash experiments/gpu_check.sh`` runs them):
the step allocates no device memory after warm-up, and a bfloat16 history on the GPU follows the CPU."""

from __future__ import annotations

import pytest
import torch

from mlbfgs import MLBFGS
from tests.support.allocation_setup import PROFILED_STEPS, warmed_optimizer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def device_allocations(fn, repeat: int = 4) -> int:
    """Allocation requests the CUDA caching allocator served while ``fn`` ran ``repeat`` times (cached blocks
    count too: any new tensor is one request)."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return torch.cuda.memory_stats()["allocation.all.allocated"] - before


def _model(seed: int = 0) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.ReLU(), torch.nn.Linear(30, 5))


def test_the_counter_sees_device_allocations() -> None:
    # the control: if this fails, the test below proves nothing
    x = torch.randn(100, device="cuda")
    assert device_allocations(lambda: x * 2) > 0
    assert device_allocations(lambda: x.mul_(0.5)) == 0  # in place on the device: no new storage


@pytest.mark.parametrize("norm", ["global", "kl", "none"])
@pytest.mark.parametrize("history_dtype", [None, torch.bfloat16])
def test_cuda_step_allocates_nothing_after_warmup(norm: str, history_dtype: torch.dtype | None) -> None:
    opt, check = warmed_optimizer("cuda", norm, history_dtype)
    assert device_allocations(opt.step, PROFILED_STEPS) == 0
    check()


def test_cuda_bfloat16_history_follows_the_cpu() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 20, generator=gen)
    y = x[:, :5].argmax(1)
    models = {"cpu": _model(), "cuda": _model().cuda()}
    opts = {dev: MLBFGS(m.parameters(), lr=0.05, update_period=3, history_size=4, blocks="layer",
                        history_dtype=torch.bfloat16) for dev, m in models.items()}
    losses: dict[str, list[float]] = {"cpu": [], "cuda": []}
    for _ in range(30):
        idx = torch.randint(0, 256, (32,), generator=gen)
        for dev, model in models.items():
            opts[dev].zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx].to(dev)), y[idx].to(dev))
            loss.backward()
            opts[dev].step()
            losses[dev].append(float(loss))
    for dev in models:
        st = opts[dev].block_state(0)
        assert st["history"].dtype == torch.bfloat16 and st["history"].device.type == dev
        assert st["num_pairs"] == 4
    for a, b in zip(models["cpu"].parameters(), models["cuda"].parameters(), strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=2e-2, atol=2e-3)
    assert sum(losses["cuda"][-5:]) < sum(losses["cuda"][:5])
