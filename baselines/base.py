"""The common driver of every optimizer in the comparison.

A :class:`TrainingOptimizer` is stepped with a *closure* bound to the current mini-batch:

    closure(backward=True)  -> zero grads, forward, backward; returns the detached loss
    closure(backward=False) -> forward only; returns the loss *with* its graph (for
                               Hessian-vector products); gradients are left alone

so that methods which need more than one evaluation per step (oLBFGS: two gradients on the same
batch; SQN: a Hessian-vector product) are driven exactly like SGD.

Cost accounting is honest by construction: the closure handed to a subclass is wrapped by a
counter, so every ``closure(backward=True)`` call adds 1 to :attr:`TrainingOptimizer.grad_evals`.
A Hessian-vector product (forward + double backward) is charged 2 by the code computing it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import nn


class Closure(Protocol):
    """A mini-batch evaluation: see the module docstring."""

    def __call__(self, backward: bool = True) -> torch.Tensor: ...


class CountingClosure:
    """Wrap a closure and charge one gradient evaluation per ``backward=True`` call."""

    def __init__(self, closure: Closure, owner: TrainingOptimizer) -> None:
        self._closure = closure
        self._owner = owner

    def __call__(self, backward: bool = True) -> torch.Tensor:
        if backward:
            self._owner.grad_evals += 1
        return self._closure(backward=backward)


class TrainingOptimizer:
    """One optimizer of the comparison, driven through :meth:`step` with a closure.

    Subclasses override :meth:`_step` (and, when they keep state outside ``self.optimizer``,
    :meth:`_extra_state` / :meth:`_load_extra_state`). The default :meth:`_step` evaluates the
    gradient once and calls ``self.optimizer.step()``.

    Attributes:
        name: the registry name.
        grad_evals: forward+backward passes spent so far (an HVP counts 2).
        grad_evals_per_step: the nominal number per step (e.g. 2 for oLBFGS, 1 + 2/L for SQN).
        loss_scale: the factor the loss of the last gradient evaluation was multiplied by before its
            backward pass (float16 loss scaling, set by the caller; 1.0 otherwise). ``.grad`` is always
            unscaled before the step; optimizers that read other backward-pass tensors (K-FAC's output
            gradients) divide those by it.
    """

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        grad_evals_per_step: float = 1.0,
        model: nn.Module | None = None,
    ) -> None:
        self.name = name
        self._optimizer = optimizer
        self.grad_evals = 0
        self.grad_evals_per_step = float(grad_evals_per_step)
        self.model = model
        self.loss_scale = 1.0

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The ``torch.optim.Optimizer`` inside (LR schedulers attach to it)."""
        return self._optimizer

    def step(self, closure: Closure) -> torch.Tensor:
        """Take one optimization step; return the loss of the first evaluation (detached)."""
        if closure is None:
            raise ValueError(f"{self.name}: step() needs a closure(backward=True) bound to the mini-batch")
        return self._step(CountingClosure(closure, self))

    def _step(self, closure: CountingClosure) -> torch.Tensor:
        loss = closure(backward=True)
        self._optimizer.step()
        return loss

    @property
    def has_modes(self) -> bool:
        """Whether the optimizer inside keeps train and eval weights apart (schedule-free methods: its
        ``train()`` / ``eval()`` switch the parameters between the points it steps at and evaluates)."""
        return callable(getattr(self._optimizer, "train", None)) and callable(getattr(self._optimizer, "eval", None))

    def train_mode(self) -> None:
        """Put the parameters at the point the optimizer steps from (its ``train()``; else nothing). The
        runner calls it before the first step and after a resume, since a checkpoint holds eval weights."""
        if self.has_modes:
            self._optimizer.train()  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """Inside, the parameters are the ones to evaluate and to checkpoint (the optimizer's ``eval()``),
        after it the ones to step from again (``train()``); without modes, nothing changes."""
        if not self.has_modes:
            yield
            return
        self._optimizer.eval()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            self._optimizer.train()  # type: ignore[attr-defined]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._optimizer.zero_grad(set_to_none=set_to_none)

    def curvature_records(self) -> list[dict[str, Any]]:
        """``[{block, mu, accepted}]`` of the curvature pairs formed in the last step (often empty)."""
        return []

    # ---- checkpointing -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "grad_evals": self.grad_evals,
            "optimizer": self._optimizer.state_dict(),
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name", self.name) != self.name:
            raise ValueError(f"state_dict is for optimizer {state['name']!r}, not {self.name!r}")
        self.grad_evals = int(state["grad_evals"])
        self._optimizer.load_state_dict(state["optimizer"])
        self._load_extra_state(state.get("extra", {}))

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        del state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, optimizer={type(self._optimizer).__name__})"


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``model`` that require gradients, in ``model.parameters()`` order."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no parameters that require gradients")
    return params


class PreservedBuffers:
    """``PreservedBuffers(model)()`` is :func:`preserved_buffers` of ``model``: a picklable callable
    (a lambda would make the optimizer that holds it unpicklable)."""

    def __init__(self, model: nn.Module | None) -> None:
        self.model = model

    def __call__(self) -> contextlib.AbstractContextManager[None]:
        return preserved_buffers(self.model)


@contextlib.contextmanager
def preserved_buffers(model: nn.Module | None) -> Iterator[None]:
    """Restore the module buffers (e.g. BatchNorm running statistics) after an extra evaluation.

    Extra forward passes that exist only to measure curvature (oLBFGS' second gradient, SQN's
    Hessian-vector product) must not count as additional updates of running statistics.
    """
    if model is None:
        yield
        return
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buf, copy in saved:
                buf.copy_(copy)

