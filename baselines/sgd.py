"""SGD with momentum (the fair first-order baseline) and normalised SGD (the mL-BFGS authors' "SGD").

``sgd`` is ``torch.optim.SGD``: with ``d = g + wd * theta``,

    buf <- momentum * buf + d;   theta <- theta - lr * buf          (nesterov: step along d + momentum*buf)

``sgd_normalized`` reproduces the baseline of the mL-BFGS reference code (yuehniu/mL-BFGS,
``opt/sgd.py``): the gradient, weight decay included, is divided by its *global* norm before momentum,

    d = (g + wd * theta) / ||g + wd * theta||;   buf <- momentum * buf + d;   theta <- theta - lr * buf.

It is offered as a named variant only, because normalisation changes the effective step size and
makes the comparison with un-normalised methods unfair (see the spec's pitfalls).

Defaults: lr 0.1 and momentum 0.9 are those of the mL-BFGS reference run script (run-SLIM.sh,
ResNet-18/CIFAR); weight decay defaults to 0 (the run script's 2e-4 is a workload setting).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .base import TrainingOptimizer, trainable_parameters
from .config import check_bool, check_nonneg, check_unit_interval
from .contract import check_parameters, lr_value


@dataclass(frozen=True)
class SGDConfig:
    """``sgd``: lr 0.1, momentum 0.9 (mL-BFGS run-SLIM.sh), weight_decay 0, nesterov False."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    dampening: float = 0.0

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        check_unit_interval("momentum", self.momentum)
        check_nonneg("weight_decay", self.weight_decay)
        check_bool("nesterov", self.nesterov)
        check_unit_interval("dampening", self.dampening)
        if self.nesterov and (self.momentum <= 0.0 or self.dampening != 0.0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0")


@dataclass(frozen=True)
class NormalizedSGDConfig:
    """``sgd_normalized``: lr 0.1, momentum 0.9 (mL-BFGS run-SLIM.sh); eps guards a zero gradient."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    eps: float = 1e-12

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        check_unit_interval("momentum", self.momentum)
        check_nonneg("weight_decay", self.weight_decay)
        check_nonneg("eps", self.eps)


class NormalizedSGD(torch.optim.Optimizer):
    """Momentum SGD on the globally normalised gradient (see the module docstring).

    The norm is taken over all parameters of all groups; no host synchronisation is needed
    (the scale stays a device tensor).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eps: float = 1e-12,
    ) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eps=eps))
        # the global norm couples every parameter: a shard (DTensor, FSDP1) cannot compute it alone
        check_parameters((p for g in self.param_groups for p in g["params"] if not p.is_complex()), "sgd_normalized")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        per_group: list[tuple[dict, list[torch.Tensor], list[torch.Tensor]]] = []
        norms: list[torch.Tensor] = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0.0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            per_group.append((group, params, grads))
            dense = [g for g in grads if not g.is_sparse]
            if dense:
                norms.extend(torch._foreach_norm(dense))
            # sparse gradients (nn.Embedding(sparse=True)): their own norm, which torch < 2.14 has no
            # foreach or vector_norm kernel for; coalescing sums repeated indices first
            norms.extend(g.coalesce().values().norm() for g in grads if g.is_sparse)
        if not per_group:
            return loss
        eps = self.param_groups[0]["eps"]
        scale = 1.0 / (torch.linalg.vector_norm(torch.stack(norms)) + eps)
        for group, params, grads in per_group:
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, torch._foreach_mul(grads, scale))
            torch._foreach_add_(params, bufs, alpha=-lr_value(group["lr"]))
        return loss


def build_sgd(model: nn.Module, cfg: SGDConfig) -> TrainingOptimizer:
    opt = torch.optim.SGD(
        trainable_parameters(model),
        lr=cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov,
        dampening=cfg.dampening,
    )
    return TrainingOptimizer("sgd", opt, 1.0, model)


def build_sgd_normalized(model: nn.Module, cfg: NormalizedSGDConfig) -> TrainingOptimizer:
    opt = NormalizedSGD(
        trainable_parameters(model), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        eps=cfg.eps,
    )
    return TrainingOptimizer("sgd_normalized", opt, 1.0, model)
