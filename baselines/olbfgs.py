"""oLBFGS: online limited-memory BFGS (Schraudolph, Yu & Guenter, AISTATS 2007, Algorithm "oLBFGS").

Per step t, on mini-batch B_t (weight decay ``wd`` enters as the L2 term ``wd * theta`` of every
gradient):

    g_t  = grad f(theta_t; B_t)
    p_t  = -H_t g_t        two-loop recursion over the last m pairs with the initial matrix
                           H_0 = (1/k) sum_{i=1..k} (s_i . y_i) / (y_i . y_i) I   (average over the history);
                           before the first pair, p_t = -eps g_t
    eta_t = tau / (tau + t) * eta_0
    s_t  = (eta_t / c) p_t;     theta_{t+1} = theta_t + s_t
    y_t  = grad f(theta_{t+1}; B_t) - g_t + lam * s_t     (the SAME batch B_t: second evaluation)

so every step costs two gradient evaluations (``grad_evals_per_step = 2``). ``eta_0`` is the param
group's ``lr``, so LR schedulers multiply the paper's own decay.

Defaults (the paper's experimental settings as we read them, also those of public
re-implementations): ``c = 0.1``, ``lam = 0``, ``tau = 2e4``, ``eta_0 = 0.1``, ``m = 10``.

Deviations, both forced by float32 training of non-convex networks:
  * the paper's first step uses ``eps = 1e-10``; in float32 such a step does not move the weights,
    so no first pair could ever form. Default ``eps = 1e-4``. With float16/bfloat16 parameters even
    that step is below their resolution and no pair forms: train oLBFGS in float32 or float64.
  * the paper assumes a convex objective (s.y > 0 always). We drop a pair whose
    ``s.y <= curvature_eps * |s| |y|`` (and any non-finite pair) and keep the history unchanged;
    deciding this costs one host synchronisation per step.
The extra evaluation at theta_{t+1} restores BatchNorm running statistics (it only measures y).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mlbfgs.compact import two_loop_

from .base import CountingClosure, PreservedBuffers, TrainingOptimizer, trainable_parameters
from .config import check_int, check_nonneg, check_positive
from .flat import FlatQuasiNewton


@dataclass(frozen=True)
class OLBFGSConfig:
    """``olbfgs``: eta_0 (lr) 0.1, tau 2e4, c 0.1, lam 0, m 10 (Schraudolph et al. 2007); eps 1e-4 (float32)."""

    lr: float = 0.1
    tau: float = 2e4
    c: float = 0.1
    lam: float = 0.0
    history_size: int = 10
    eps: float = 1e-4
    weight_decay: float = 0.0
    curvature_eps: float = 1e-8

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        check_positive("tau", self.tau)
        check_positive("c", self.c)
        check_nonneg("lam", self.lam)
        check_int("history_size", self.history_size)
        check_positive("eps", self.eps)
        check_nonneg("weight_decay", self.weight_decay)
        check_nonneg("curvature_eps", self.curvature_eps)


class OLBFGS(FlatQuasiNewton):
    """oLBFGS as a ``torch.optim.Optimizer``; ``step(closure)`` needs the closure (2 calls per step).

    ``closure()`` must evaluate the *current* mini-batch at the current parameters, fill ``.grad`` and
    return the loss; it is called before and after the update. Groups, parameters without gradients
    and state follow :class:`baselines.flat.FlatQuasiNewton`.
    """

    STATE_KEY = "olbfgs"

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float = 0.1,
        tau: float = 2e4,
        c: float = 0.1,
        lam: float = 0.0,
        history_size: int = 10,
        eps: float = 1e-4,
        weight_decay: float = 0.0,
        curvature_eps: float = 1e-8,
        second_eval_context: Callable[[], AbstractContextManager] | None = None,
    ) -> None:
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay), history_size)
        self.tau, self.c, self.lam, self.eps, self.curvature_eps = tau, c, lam, eps, curvature_eps
        self._x = self._buffer("_x")
        self._g = self._buffer("_g")
        self._g_new = self._buffer("_g_new")
        self._s = self._buffer("_s")
        self._y = self._buffer("_y")
        self._second_eval_context = second_eval_context or contextlib.nullcontext
        self.last_records: list[dict[str, Any]] = []
        self._publish()

    @property
    def t(self) -> int:
        return self.steps

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:  # type: ignore[override]
        if closure is None:
            raise ValueError("OLBFGS.step needs a closure: y is a gradient difference on the same batch")
        self._sync()  # a cast, reset, load or hand edit since the last step (baselines/flat.py)
        with torch.enable_grad():
            loss = closure()
        self.last_records = []
        if not self._has_gradients():
            return loss
        with torch.no_grad():
            g = self._gradient(self._g, self._x)
            if len(self._ring) == 0:
                direction = torch.mul(g, self.eps, out=self._s)
            else:
                s_list, y_list, rho = self._ring.ordered()
                direction = two_loop_(g.clone(), s_list, y_list, rho, self._ring.mean_gamma())
            self._mask_(direction)
            # s = -(eta_t / c) p with eta_t = lr_group * tau / (tau + t)
            s = torch.mul(direction, -1.0, out=self._s)
            self._scale_by_lr_(s, self.tau / (self.tau + self.t) / self.c)
            self._flat.add_to_params(s)
        with torch.enable_grad(), self._second_eval_context():
            closure()
        with torch.no_grad():
            y = torch.sub(self._gradient(self._g_new, self._x), g, out=self._y)
            if self.lam != 0.0:
                y.add_(s, alpha=self.lam)
            stats = torch.stack([torch.dot(s, y), torch.dot(s, s), torch.dot(y, y)])
            sy, ss, yy = stats.tolist()  # the one host sync: accept or reject the pair
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
        self._count_step()
        self._publish_counters()
        return loss


class OLBFGSTraining(TrainingOptimizer):
    def _step(self, closure: CountingClosure) -> torch.Tensor:
        return self.optimizer.step(lambda: closure(backward=True))

    def curvature_records(self) -> list[dict[str, Any]]:
        return list(self.optimizer.last_records)  # type: ignore[attr-defined]


def build_olbfgs(model: nn.Module, cfg: OLBFGSConfig) -> TrainingOptimizer:
    opt = OLBFGS(
        trainable_parameters(model),
        lr=cfg.lr,
        tau=cfg.tau,
        c=cfg.c,
        lam=cfg.lam,
        history_size=cfg.history_size,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        curvature_eps=cfg.curvature_eps,
        second_eval_context=PreservedBuffers(model),
    )
    return OLBFGSTraining("olbfgs", opt, 2.0, model)
