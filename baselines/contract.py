"""What every optimizer of the registry keeps of ``torch.optim``'s contract (tests/baselines/test_conformance.py).

- :class:`PicklableOptimizer`: ``copy.deepcopy`` and ``pickle`` keep the optimizer's own attributes
  (``torch.optim.Optimizer.__getstate__`` keeps only defaults, state and groups).
- :func:`check_parameters`: unsupported tensor kinds are refused at construction, naming the
  parameter and the reason (complex dtypes, DTensor, FSDP1 flat parameters; the rules of
  :func:`mlbfgs.check_supported`).
- :func:`check_dense_gradients`: a sparse gradient is refused at the step, naming the parameter.
- :func:`check_saved_settings`: a state saved with other settings that shape it is refused on load,
  naming the setting, instead of failing later with a ``KeyError`` or a shape error.
- :func:`lr_value`: a group's ``lr`` as a Python float (a float, a 0-dim or a 1-element tensor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from mlbfgs import check_supported

#: why a saved entry may be missing, for load errors
FROZEN_HINT = ("; was it saved by this optimizer, and was its first parameter frozen when loading through the "
               "distributed-checkpoint helpers (they skip parameters that do not require gradients)? Unfreeze "
               "before loading")


class PicklableOptimizer(torch.optim.Optimizer):
    """Keeps the whole ``__dict__`` through ``copy.deepcopy`` and ``pickle`` (hooks included, as torch
    restores them), so a copied optimizer trains exactly like the original."""

    def __getstate__(self) -> dict[str, Any]:
        # an LR scheduler's wrapper of ``step`` is bound to this instance: not copied (as torch does)
        return {k: v for k, v in self.__dict__.items() if k != "step"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)


def check_parameters(params: Iterable[torch.Tensor], owner: str) -> None:
    """``ValueError`` naming the first parameter (its index among all the optimizer's parameters) that
    ``owner``, an optimizer coupling parameters, cannot train."""
    for i, p in enumerate(params):
        check_supported(p, i, owner)


def check_dense_gradients(params: Iterable[torch.Tensor], name: str) -> None:
    """``ValueError`` naming the first parameter whose gradient is sparse."""
    for i, p in enumerate(params):
        g = p.grad
        if g is not None and (g.is_sparse or g.layout != torch.strided):
            raise ValueError(
                f"{name}: parameter {i} (shape {tuple(p.shape)}) has a sparse gradient; this optimizer needs "
                "dense gradients (e.g. nn.Embedding(sparse=False))"
            )


def check_saved_settings(name: str, saved: Mapping[str, Any] | None, now: Mapping[str, Any]) -> None:
    """``ValueError`` naming the first setting whose saved value differs from ``now``."""
    if saved is None:
        raise ValueError(f"{name}.load_state_dict: the state has no settings record" + FROZEN_HINT)
    def plain(v: Any) -> Any:
        return v.tolist() if isinstance(v, torch.Tensor) else v

    for key, value in now.items():
        if key in saved and plain(saved[key]) != plain(value):
            raise ValueError(
                f"{name}.load_state_dict: the state was saved with {key}={plain(saved[key])!r}, but this optimizer "
                f"has {key}={plain(value)!r}; build it with the saved settings"
            )


def lr_value(lr: float | torch.Tensor) -> float:
    """``lr`` as a float; a tensor must hold one element (read once: a host sync on an accelerator)."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError(f"lr: a tensor lr must hold one element, got shape {tuple(lr.shape)}")
        return float(lr.reshape(()))
    return float(lr)


def first_saved_index(state_dict: Mapping[str, Any]) -> Any:
    """The key under which ``state_dict`` holds the state of the optimizer's first parameter."""
    for group in state_dict["param_groups"]:
        if group["params"]:
            return group["params"][0]
    raise ValueError("load_state_dict: the saved param groups hold no parameter")
