"""Test-set evaluation: mean cross-entropy and accuracy, summed over data-parallel ranks."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from experiments.runner.dist_context import DistContext
from experiments.workloads.data.base import DataSource


@torch.no_grad()
def evaluate(model: nn.Module, data: DataSource, batch_size: int, ctx: DistContext) -> tuple[float, float, float]:
    """(test_loss, test_acc, seconds). ``model`` is the unwrapped module; its mode is restored."""
    start = time.perf_counter()
    was_training = model.training
    if ctx.enabled:  # BatchNorm running statistics drift apart per rank; evaluate rank 0's
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    correct = torch.zeros((), dtype=torch.int64, device=ctx.device)
    count = 0
    for x, y in data.test_batches(batch_size=batch_size, rank=ctx.rank, world_size=ctx.world_size):
        logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
        correct += (logits.argmax(dim=1) == y).sum()
        count += len(y)
    model.train(was_training)
    total_loss, total_correct, total = ctx.sum([loss_sum.item(), float(correct.item()), float(count)])
    if total == 0:
        raise ValueError("the test set is empty (check data.test_subset)")
    return total_loss / total, total_correct / total, time.perf_counter() - start
