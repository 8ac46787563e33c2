"""``muon``: ``pytorch_optimizer.Muon`` (K. Jordan et al. 2024) on :func:`baselines.recipes.muon_groups`: Muon
(lr 0.02, momentum 0.95, Nesterov, 5 Newton-Schulz steps) for the hidden layers' matrices, AdamW (lr 3e-4,
betas (0.9, 0.95)) for the rest, the authors' recommendation."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pytorch_optimizer
import torch
from torch import nn

from ..base import TrainingOptimizer
from ..config import check_nonneg, check_unit_interval
from ..contract import PicklableOptimizer
from .common import betas_pair, build_peer, restart_if_cleared, zero_dim_lr


class Muon(PicklableOptimizer, pytorch_optimizer.Muon):
    """pytorch_optimizer's Muon, kept whole by deepcopy and pickle, restarting when its state is cleared, and
    taking groups added later: a group without ``use_muon`` is an AdamW group, and a group takes the
    settings of the existing groups of its kind (the library fills them only in its constructor)."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = {"use_muon": False, **param_group}
        kind = next((g for g in getattr(self, "param_groups", []) if g["use_muon"] == group["use_muon"]), None)
        if kind is not None:
            for key, value in kind.items():
                if key not in ("params", "step"):
                    group.setdefault(key, value)
        super().add_param_group(group)

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        restart_if_cleared(self, {"step": None})
        zero_dim_lr(self)
        self._saturate_second_moments()
        return super().step(closure)

    @torch.no_grad()
    def _saturate_second_moments(self) -> None:
        # the library's AdamW half averages with lerp_, and lerp(inf, inf) is NaN: a squared gradient past the
        # dtype's range (a loss scaled by 1e30) would turn the parameters to NaN at the next step, where
        # torch.optim.AdamW keeps inf and steps by zero. Clamping to the largest finite value restores torch's
        # behaviour and changes nothing below it (one foreach call per dtype, no host sync).
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for group in self.param_groups:
            if not group.get("use_muon", False):
                for p in group["params"]:
                    sq = self.state[p].get("exp_avg_sq") if p in self.state else None
                    if sq is not None and sq.is_floating_point():
                        by_dtype.setdefault(sq.dtype, []).append(sq)
        for dtype, tensors in by_dtype.items():
            torch._foreach_clamp_max_(tensors, torch.finfo(dtype).max)


@dataclass(frozen=True)
class MuonConfig:
    """``muon``: Muon lr 0.02, momentum 0.95 (Nesterov), AdamW lr 3e-4 betas (0.9, 0.95) for the rest; weight
    decay (the workload's) decoupled, in both halves."""

    lr: float = 0.02
    momentum: float = 0.95
    weight_decay: float = 0.0
    adamw_lr: float = 3e-4
    adamw_betas: tuple[float, float] = (0.9, 0.95)

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        check_unit_interval("momentum", self.momentum)
        check_nonneg("weight_decay", self.weight_decay)
        check_nonneg("adamw_lr", self.adamw_lr)
        object.__setattr__(self, "adamw_betas", betas_pair("adamw_betas", self.adamw_betas))


def build_muon(model: nn.Module, cfg: MuonConfig) -> TrainingOptimizer:
    # the workload's weight decay reaches both halves (the library's AdamW half defaults to none)
    arguments: dict[str, Any] = {**asdict(cfg), "adamw_wd": cfg.weight_decay,
                                 "param_groups": "baselines.recipes:muon_groups"}
    return build_peer("muon", Muon, model, arguments)
