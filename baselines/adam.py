"""Adam (Kingma & Ba 2015) and AdamW (Loshchilov & Hutter 2019), both ``torch.optim``.

    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  theta <- theta - lr * m_hat / (sqrt(v_hat) + eps)

Adam adds ``wd * theta`` to ``g`` (L2); AdamW decays ``theta <- theta (1 - lr wd)`` separately.

Defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8 (Kingma & Ba 2015, also torch's defaults; the
mL-BFGS reference's "ADAM" is AdamW with betas (0.9, 0.999), train.py/model_utils.py).
Weight decay: 0 for ``adam``; 0.01 for ``adamw`` (torch.optim.AdamW's default).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import TrainingOptimizer, trainable_parameters
from .config import check_bool, check_nonneg, check_positive, check_unit_interval


def _check_betas(betas: tuple[float, float]) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    check_unit_interval("betas[0]", betas[0])
    check_unit_interval("betas[1]", betas[1])
    return (float(betas[0]), float(betas[1]))


@dataclass(frozen=True)
class AdamConfig:
    """``adam``: lr 1e-3, betas (0.9, 0.999), eps 1e-8 (Kingma & Ba 2015), weight_decay 0 (L2)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        object.__setattr__(self, "betas", _check_betas(self.betas))
        check_positive("eps", self.eps)
        check_nonneg("weight_decay", self.weight_decay)
        check_bool("amsgrad", self.amsgrad)


@dataclass(frozen=True)
class AdamWConfig(AdamConfig):
    """``adamw``: as ``adam`` with decoupled weight decay 0.01 (torch.optim.AdamW default)."""

    weight_decay: float = 0.01


def build_adam(model: nn.Module, cfg: AdamConfig) -> TrainingOptimizer:
    opt = torch.optim.Adam(
        trainable_parameters(model), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
        weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad,
    )
    return TrainingOptimizer("adam", opt, 1.0, model)


def build_adamw(model: nn.Module, cfg: AdamWConfig) -> TrainingOptimizer:
    opt = torch.optim.AdamW(
        trainable_parameters(model), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
        weight_decay=cfg.weight_decay, amsgrad=cfg.amsgrad,
    )
    return TrainingOptimizer("adamw", opt, 1.0, model)
