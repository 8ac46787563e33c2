"""The optimizers practitioners choose today, from their own well-kept libraries (issue: head to head with
SOAP, Shampoo, Muon and schedule-free AdamW). Each is built on its library with its authors' recommended
defaults and driven like every other optimizer (:class:`baselines.external.ExternalOptimizer`: one gradient,
then ``step()``; the runner switches ``train()``/``eval()`` modes where the optimizer has them).

- ``adamw_schedulefree``: ``schedulefree.AdamWScheduleFree`` (Defazio et al. 2024, "The Road Less
  Scheduled"; winner of AlgoPerf's self-tuning track). Defaults: the library's (lr 0.0025, betas
  (0.9, 0.999), warmup 0, weight_lr_power 2); weight decay 0 (a workload setting).
- ``muon``: ``pytorch_optimizer.Muon`` (K. Jordan et al. 2024) on :func:`baselines.recipes.muon_groups`:
  Muon (lr 0.02, momentum 0.95, Nesterov, 5 Newton-Schulz steps) for the hidden layers' matrices, AdamW
  (lr 3e-4, betas (0.9, 0.95)) for the rest, the authors' recommendation.
Both pass the conformance suite (``tests/baselines/test_conformance*.py``) and are checked against their papers'
updates in ``tests/baselines/test_peers.py``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pytorch_optimizer
import schedulefree
import torch
from torch import nn

from .base import TrainingOptimizer, trainable_parameters
from .config import check_int, check_nonneg, check_positive, check_unit_interval
from .contract import PicklableOptimizer, check_parameters
from .external import build_external


def _zero_dim_lr(opt: torch.optim.Optimizer) -> None:
    """These libraries take a tensor lr only with 0 dimensions; a 1-element one (torch.optim accepts it) is
    viewed as 0-dim (a view: the caller's tensor still drives it)."""
    for group in opt.param_groups:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) and lr.dim() > 0 and lr.numel() == 1:
            group["lr"] = lr.reshape(())


def _restart_if_cleared(opt: torch.optim.Optimizer, counters: dict[str, Any]) -> None:
    """An emptied ``state`` (``state.clear()``, a new dict) restarts the optimizer as one built now, as
    torch.optim's own do; these libraries keep counters in the groups, which are reset here."""
    if not opt.state and any(group.get(k) != v for group in opt.param_groups for k, v in counters.items()):
        for group in opt.param_groups:
            for k, v in counters.items():
                if v is None:
                    group.pop(k, None)
                else:
                    group[k] = v


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
        _restart_if_cleared(self, {"k": 0, "weight_sum": 0.0, "lr_max": -1.0})
        _zero_dim_lr(self)
        return super().step(closure)


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
        _restart_if_cleared(self, {"step": None})
        _zero_dim_lr(self)
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
class AdamWScheduleFreeConfig:
    """``adamw_schedulefree``: schedulefree's defaults (lr 0.0025, betas (0.9, 0.999), eps 1e-8, warmup 0)."""

    lr: float = 0.0025
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        check_unit_interval("betas[0]", self.betas[0])
        check_unit_interval("betas[1]", self.betas[1])
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))
        check_positive("eps", self.eps)
        check_nonneg("weight_decay", self.weight_decay)
        check_int("warmup_steps", self.warmup_steps, minimum=0)


@dataclass(frozen=True)
class MuonConfig:
    """``muon``: Muon lr 0.02, momentum 0.95 (Nesterov), AdamW lr 3e-4 betas (0.9, 0.95) for the rest."""

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
        object.__setattr__(self, "adamw_betas", (float(self.adamw_betas[0]), float(self.adamw_betas[1])))


def build_adamw_schedulefree(model: nn.Module, cfg: AdamWScheduleFreeConfig) -> TrainingOptimizer:
    check_parameters(trainable_parameters(model), "adamw_schedulefree")
    opt = build_external("baselines.peers:AdamWScheduleFree", model, asdict(cfg))
    opt.name = "adamw_schedulefree"
    opt.train_mode()  # the library starts in eval mode and refuses to step there
    return opt


def build_muon(model: nn.Module, cfg: MuonConfig) -> TrainingOptimizer:
    check_parameters(trainable_parameters(model), "muon")
    arguments: dict[str, Any] = {**asdict(cfg), "param_groups": "baselines.recipes:muon_groups"}
    opt = build_external("baselines.peers:Muon", model, arguments)
    opt.name = "muon"
    return opt
