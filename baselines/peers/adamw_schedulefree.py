"""``adamw_schedulefree``: ``schedulefree.AdamWScheduleFree`` (Defazio et al. 2024, "The Road Less Scheduled";
winner of AlgoPerf's self-tuning track), with the library's defaults. It trains at a constant lr after the
warm-up, its averaging replacing the schedule (``experiments.runner.spec``), and the runner switches its
``train()``/``eval()`` modes around evaluations and checkpoints."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import schedulefree
from torch import nn

from ..base import TrainingOptimizer
from ..config import check_int, check_nonneg, check_positive
from ..contract import PicklableOptimizer
from .common import betas_pair, build_peer, restart_if_cleared, zero_dim_lr


class AdamWScheduleFree(PicklableOptimizer, schedulefree.AdamWScheduleFree):
    """schedulefree's AdamW, restarting when its state is cleared (its step counter and weight sums live in
    the groups)."""

    def train(self) -> None:
        super().train()
        self._drop_empty_entries()

    def eval(self) -> None:
        super().eval()
        self._drop_empty_entries()

    def _drop_empty_entries(self) -> None:
        # the library's mode switch reads self.state[p] for every parameter, which creates empty entries in
        # the defaultdict before the first step; torch's checkpoint helpers then take the optimizer for
        # initialised and skip the step that builds the state their loading template needs
        for p in [p for p, entry in self.state.items() if not entry]:
            del self.state[p]

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        restart_if_cleared(self, {"k": 0, "weight_sum": 0.0, "lr_max": -1.0})
        zero_dim_lr(self)
        return super().step(closure)


@dataclass(frozen=True)
class AdamWScheduleFreeConfig:
    """``adamw_schedulefree``: schedulefree's defaults (lr 0.0025, betas (0.9, 0.999), eps 1e-8, warmup 0)."""

    lr: float = 0.0025
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        object.__setattr__(self, "betas", betas_pair("betas", self.betas))
        check_positive("eps", self.eps)
        check_nonneg("weight_decay", self.weight_decay)
        check_int("warmup_steps", self.warmup_steps, minimum=0)


def build_adamw_schedulefree(model: nn.Module, cfg: AdamWScheduleFreeConfig) -> TrainingOptimizer:
    opt = build_peer("adamw_schedulefree", AdamWScheduleFree, model, asdict(cfg))
    opt.train_mode()  # the library starts in eval mode and refuses to step there
    return opt
