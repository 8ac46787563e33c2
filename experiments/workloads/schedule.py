"""Learning-rate schedule as a pure function of the iteration (stateless, so resuming needs nothing)."""

from __future__ import annotations

import math

from experiments.workloads.config import ScheduleConfig


def lr_factor(schedule: ScheduleConfig, iteration: int, total_iters: int) -> float:
    """Multiplier of the base LR for the step taken at 0-based ``iteration`` of ``total_iters``.

    Warm-up: (t + 1) / W for t < W. Then cosine: f + (1 - f) * (1 + cos(pi * t' / T')) / 2 with
    t' = t - W, T' = total - W - 1 (the last step lands exactly on f), f = ``final_fraction``.
    ``constant`` keeps the factor at 1 after warm-up.
    """
    warm = schedule.warmup_iters
    if iteration < warm:
        return (iteration + 1) / warm
    if schedule.kind == "constant":
        return 1.0
    span = total_iters - warm - 1
    if span <= 0:
        return 1.0
    progress = min(1.0, (iteration - warm) / span)
    f = schedule.final_fraction
    return f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LRSchedule:
    """Sets every param group's lr to base_lr * lr_factor before each step."""

    def __init__(self, optimizer, schedule: ScheduleConfig, total_iters: int) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.total_iters = total_iters
        self.base_lrs = [float(g["lr"]) for g in optimizer.param_groups]

    def apply(self, iteration: int) -> float:
        factor = lr_factor(self.schedule, iteration, self.total_iters)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor
        return self.base_lrs[0] * factor
