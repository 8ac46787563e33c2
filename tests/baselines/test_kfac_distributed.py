"""Distributed K-FAC with 2 gloo processes on CPU.

Each rank evaluates half of a global batch, averages the gradients (as DDP would) and runs K-FAC:
factors are averaged over the ranks and each eigendecomposition is computed by its owner only and
broadcast. The parameters must match a single-process run on the whole batch, and the
eigendecompositions must be split between the ranks.
"""

from __future__ import annotations

import datetime
import os
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from baselines import build_optimizer

DT = torch.float64
WORLD = 2
STEPS = 4
CFG = dict(lr=0.1, momentum=0.9, weight_decay=1e-3, factor_update_freq=1, inv_update_freq=2, damping=0.01)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 3, 3, stride=2), nn.Tanh(),
        nn.Flatten(), nn.Linear(3 * 2 * 2, 6), nn.Tanh(), nn.Linear(6, 3),
    ).to(DT)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randn(8, 2, 5, 5, generator=gen, dtype=DT), torch.randint(0, 3, (8,), generator=gen)


def _train(rank: int, world: int) -> tuple[nn.Module, object]:
    model = _model()
    opt = build_optimizer("kfac", model, **CFG)
    for step in range(STEPS):
        x, y = _batch(step)
        share = x.shape[0] // world
        xb, yb = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]

        def closure(backward=True, xb=xb, yb=yb):
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            if world > 1:
                for p in model.parameters():
                    dist.all_reduce(p.grad)
                    p.grad.div_(world)
            return loss.detach()

        opt.step(closure)
    return model, opt


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        model, opt = _train(rank, WORLD)
        pre = opt.preconditioner
        torch.save(
            {
                "params": [p.detach() for p in model.parameters()],
                "eigen_count": pre.eigen_count,
                "owned": sum(1 for owner in pre.owners.values() if owner == rank),
                "owners": dict(pre.owners),
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()
    os._exit(0)  # skip interpreter teardown, where gloo's threads can abort the process


def test_two_process_kfac_matches_single_process_and_splits_eigendecompositions(tmp_path):
    ctx = mp.start_processes(
        _worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("distributed K-FAC workers did not finish in time")

    ref_model, ref_opt = _train(0, 1)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for res in results:
        for got, want in zip(res["params"], ref_model.parameters(), strict=True):
            torch.testing.assert_close(got, want.detach(), rtol=1e-9, atol=1e-12)
    inverse_updates = (STEPS + CFG["inv_update_freq"] - 1) // CFG["inv_update_freq"]
    assert results[0]["owners"] == results[1]["owners"]
    for r, res in enumerate(results):
        assert res["owned"] > 0, f"rank {r} owns no eigendecomposition"
        assert res["eigen_count"] == res["owned"] * inverse_updates
    assert sum(res["eigen_count"] for res in results) == ref_opt.preconditioner.eigen_count
