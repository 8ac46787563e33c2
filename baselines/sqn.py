"""SQN: the stochastic quasi-Newton method of Byrd, Hansen, Nocedal & Singer (SIAM J. Optim. 2016).

Per step k (1-based) on mini-batch S_k, with g_k = grad F(x_k; S_k) (+ wd * x_k as L2):

    xbar_acc <- xbar_acc + x_k
    x_{k+1}  = x_k - alpha * g_k          while no curvature pair exists (the paper: k <= 2L)
    x_{k+1}  = x_k - alpha * H_t g_k      afterwards; H_t by the two-loop recursion over the last M
                                          pairs with H_0 = (s_t . y_t) / (y_t . y_t) I (newest pair)
    every L steps:  xbar_t = xbar_acc / L;  xbar_acc <- 0
                    s_t = xbar_t - xbar_{t-1}
                    y_t = grad^2 F(xbar_t; S_H) s_t     (+ wd * s_t)

The curvature y_t is a Hessian-vector product *at the averaged iterate* xbar_t, computed by double
backward (``closure(backward=False)`` then ``torch.autograd.grad(..., create_graph=True)``), on
S_H = the current mini-batch (the closure interface exposes one batch; the paper draws a separate,
larger S_H). One HVP is charged 2 gradient evaluations, so ``grad_evals_per_step = 1 + 2 / L``.

Defaults (paper, Sec. 5, as we read it): L = 20 (they use 10 or 20), M = 10. The paper's step size
is alpha_k = beta / k with beta tuned per problem; here alpha is the param group's ``lr`` (constant,
schedulable), default 0.1. Guard (not in the paper, which assumes convexity): a pair with
``s.y <= curvature_eps * |s| |y|`` or a non-finite entry is dropped. The HVP evaluation restores
BatchNorm running statistics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlbfgs.compact import two_loop_

from .base import CountingClosure, PreservedBuffers, TrainingOptimizer, trainable_parameters
from .config import check_int, check_nonneg
from .flat import FlatQuasiNewton


def hessian_vector_product(
    loss: torch.Tensor, params: Sequence[torch.Tensor], vectors: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """``[d/dp (grad L . v)]`` = ``H v`` for a ``loss`` that still holds its graph (double backward)."""
    params = list(params)
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    used = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    out = [torch.zeros_like(p) for p in params]
    if not used:
        return out
    hv = torch.autograd.grad(
        [grads[i] for i in used],
        [params[i] for i in used],
        grad_outputs=[vectors[i] for i in used],
        allow_unused=True,
    )
    for i, h in zip(used, hv, strict=True):
        if h is not None:
            out[i] = h.detach()
    return out


@dataclass(frozen=True)
class SQNConfig:
    """``sqn``: L (update_period) 20, M (history_size) 10 (Byrd et al. 2016); lr 0.1 constant."""

    lr: float = 0.1
    update_period: int = 20
    history_size: int = 10
    weight_decay: float = 0.0
    curvature_eps: float = 1e-8

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        check_int("update_period", self.update_period)
        check_int("history_size", self.history_size)
        check_nonneg("weight_decay", self.weight_decay)
        check_nonneg("curvature_eps", self.curvature_eps)


class SQN(FlatQuasiNewton):
    """SQN as a ``torch.optim.Optimizer``.

    ``step(closure)``: ``closure()`` fills ``.grad`` for the current batch (called once);
    every ``update_period`` steps ``loss_closure()`` (a forward pass returning the loss *with* its
    graph) is called once at the averaged iterate for the Hessian-vector product. Groups, parameters
    without gradients and state follow :class:`baselines.flat.FlatQuasiNewton`; the HVP is taken with
    respect to the parameters that have gradients.
    """

    STATE_KEY = "sqn"

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 0.1,
        update_period: int = 20,
        history_size: int = 10,
        weight_decay: float = 0.0,
        curvature_eps: float = 1e-8,
        hvp_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay), history_size)
        self.update_period = update_period
        self.curvature_eps = curvature_eps
        self._x = self._buffer("_x")
        self._g = self._buffer("_g")
        self._acc = self._buffer("_acc")
        self._xbar_old = self._buffer("_xbar_old")
        self._s = self._buffer("_s")
        self._y = self._buffer("_y")
        self._have_xbar_old = False
        self.hvp_count = 0
        self.step_hvps = 0  # HVPs taken by the last step (0 or 1): what SQNTraining charges for it
        self._hvp_context = hvp_context or contextlib.nullcontext
        self.last_records: list[dict[str, Any]] = []
        self._publish()

    @property
    def k(self) -> int:
        return self.steps

    def _settings(self) -> dict[str, Any]:
        return {"history_size": self._ring.m, "update_period": self.update_period}

    def _on_extended(self, added: list[slice]) -> None:
        # the new coordinates enter the running average as if they had been there all period
        x = self._flat.gather_params(self._x)
        for sl in added:
            self._acc[sl].copy_(x[sl]).mul_(self.k % self.update_period)
            self._xbar_old[sl].copy_(x[sl])

    def _restart_extra(self) -> None:
        self._have_xbar_old = False
        self.hvp_count = 0

    def step(  # type: ignore[override]
        self,
        closure: Callable[[], torch.Tensor] | None = None,
        loss_closure: Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        loss = None
        self.step_hvps = 0
        self._sync()  # a cast, reset, load or hand edit since the last step (baselines/flat.py)
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_records = []
        if not self._has_gradients():
            return loss
        with torch.no_grad():
            x = self._flat.gather_params(self._x)
            g = self._gradient(self._g, x)
            self._acc.add_(x)
            if len(self._ring) == 0:
                direction = torch.mul(g, -1.0, out=self._s)
            else:
                s_list, y_list, rho = self._ring.ordered()
                direction = two_loop_(g.clone(), s_list, y_list, rho, self._ring.newest_gamma()).neg_()
            self._flat.add_to_params(self._scale_by_lr_(self._mask_(direction)))
        self._count_step()
        if self.k % self.update_period == 0:
            self._curvature_update(loss_closure)
        self._publish_counters()
        return loss

    @torch._dynamo.disable  # double backward at another iterate: run eagerly under torch.compile
    def _curvature_update(self, loss_closure: Callable[[], torch.Tensor] | None) -> None:
        xbar = self._acc.div_(self.update_period)  # xbar_t, in place of the accumulator
        if self._have_xbar_old:
            if loss_closure is None:
                raise ValueError("SQN needs loss_closure (forward with graph) every update_period steps")
            s = self._mask_(torch.sub(xbar, self._xbar_old, out=self._s))
            x_now = self._flat.gather_params(self._x)
            live = [i for i, p in enumerate(self._flat.params) if p.grad is not None]
            params = [self._flat.params[i] for i in live]
            try:
                self._flat.set_params(xbar)
                with torch.enable_grad(), self._hvp_context():
                    s_views = self._flat.views(s)
                    hv = hessian_vector_product(loss_closure(), params, [s_views[i] for i in live])
            finally:
                self._flat.set_params(x_now)
            self.hvp_count += 1
            self.step_hvps += 1
            with torch.no_grad():
                y = self._y.zero_()
                y_views = self._flat.views(y)
                torch._foreach_copy_([y_views[i] for i in live], hv)
                for group, sl in zip(self.param_groups, self._flat.group_slices):
                    if group["weight_decay"] != 0.0:
                        torch._foreach_add_(y_views[sl], self._flat.views(s)[sl], alpha=group["weight_decay"])
                stats = torch.stack([torch.dot(s, y), torch.dot(s, s), torch.dot(y, y)])
                sy, ss, yy = stats.tolist()  # decision: accept or drop the pair (every L steps)
                accepted = (
                    all(math.isfinite(v) for v in (sy, ss, yy))
                    and ss > 0.0
                    and sy > self.curvature_eps * math.sqrt(ss * yy)
                )
                if accepted:
                    self._ring.push(s, y, stats[0], stats[2])
                self.last_records = [
                    {"block": "model", "mu": sy / ss if ss > 0 else float("nan"), "accepted": accepted}
                ]
        self._xbar_old.copy_(xbar)
        self._have_xbar_old = True
        self._acc.zero_()

    def _extra_state(self) -> dict[str, Any]:
        return {"hvp_count": self.hvp_count, "have_xbar_old": self._have_xbar_old}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self.hvp_count = int(extra["hvp_count"])
        self._have_xbar_old = bool(extra["have_xbar_old"])


class SQNTraining(TrainingOptimizer):
    def _step(self, closure: CountingClosure) -> torch.Tensor:
        opt: SQN = self.optimizer  # type: ignore[assignment]
        loss = opt.step(lambda: closure(backward=True), lambda: closure(backward=False))
        # an HVP = forward + double backward = 2 (counted per step: a state reset restarts hvp_count)
        self.grad_evals += 2 * opt.step_hvps
        return loss  # type: ignore[return-value]

    def curvature_records(self) -> list[dict[str, Any]]:
        return list(self.optimizer.last_records)  # type: ignore[attr-defined]


def build_sqn(model: nn.Module, cfg: SQNConfig) -> TrainingOptimizer:
    opt = SQN(
        trainable_parameters(model),
        lr=cfg.lr,
        update_period=cfg.update_period,
        history_size=cfg.history_size,
        weight_decay=cfg.weight_decay,
        curvature_eps=cfg.curvature_eps,
        hvp_context=PreservedBuffers(model),
    )
    return SQNTraining("sqn", opt, 1.0 + 2.0 / cfg.update_period, model)
