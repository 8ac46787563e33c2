"""The foreach phases of an MLBFGS step (1, 2 and 7 of :class:`mlbfgs.MLBFGS`), as functions of the
step's tensor lists (:class:`mlbfgs.step_buffers.StepBuffers`): the functional core under the class,
as in ``torch.optim``. Every call works on whole lists; none allocates."""

from __future__ import annotations

from typing import Any

import torch

from .step_buffers import StepBuffers, StepPhase


def gather_gradient_(buf: StepBuffers, groups: list[dict[str, Any]]) -> None:
    """Phase 1: ``g = grad + weight_decay * theta`` of every parameter into the flat buffer."""
    if buf.zero_views:
        torch._foreach_zero_(buf.zero_views)
    torch._foreach_copy_(buf.grad_views, buf.grads())
    for views, params, group in zip(buf.group_views, buf.group_params, groups):
        if group["weight_decay"] != 0 and views:
            torch._foreach_add_(views, params, alpha=group["weight_decay"])


def update_averages_(buf: StepBuffers, phase: StepPhase, beta: float) -> None:
    """Phase 2: the parameter and gradient averages of the blocks with gradients."""
    if not phase.blocks:
        return
    if phase.first:
        torch._foreach_copy_(buf.live_ema, buf.live_params)
        torch._foreach_copy_(buf.live_grad_avg, buf.live_grads)
        torch._foreach_copy_(buf.live_param_anchor, buf.live_param_avg)
        torch._foreach_copy_(buf.live_grad_anchor, buf.live_grads)
    else:
        weight = 1.0 - beta
        if buf.live_same_dtype:
            torch._foreach_lerp_(buf.live_ema, buf.live_params, weight)
        else:  # e.g. bfloat16 parameters, float32 averages: lerp needs one dtype
            torch._foreach_mul_(buf.live_ema, 1.0 - weight)
            torch._foreach_add_(buf.live_ema, buf.live_params, alpha=weight)
        torch._foreach_lerp_(buf.live_grad_avg, buf.live_grads, weight)


def momentum_update_(buf: StepBuffers, groups: list[dict[str, Any]]) -> None:
    """Phase 7: ``buf <- mu buf + d``, ``theta <- theta - lr buf`` for parameters with gradients."""
    for group, views, params, momenta, mom, lr_t in zip(
        groups, buf.update_views, buf.update_params, buf.update_momenta, buf.momentum, buf.lr
    ):
        if not params:
            continue
        lr = group["lr"]
        if momenta:
            mom.fill_(group["momentum"])  # a tensor factor: a Python scalar would allocate per tensor
            torch._foreach_mul_(momenta, mom)
            torch._foreach_add_(momenta, views)
            step = momenta
        else:
            step = views
        if isinstance(lr, torch.Tensor):  # scaled in the flat scratch: lr * step, then subtracted
            lr_t.copy_(lr.reshape(()))
            if step is not views:
                torch._foreach_copy_(views, step)
            torch._foreach_mul_(views, lr_t)
            torch._foreach_sub_(params, views)
        else:
            torch._foreach_add_(params, step, alpha=-lr)
