"""What the four peers' wrappers share: the libraries' lr and counter conventions made torch.optim's, and
per-parameter lists of tensors flattened for checkpoints (torch.distributed.checkpoint cannot hold lists)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..base import TrainingOptimizer, trainable_parameters
from ..config import check_unit_interval
from ..contract import check_parameters
from ..external import build_external


def zero_dim_lr(opt: torch.optim.Optimizer) -> None:
    """These libraries take a tensor lr only with 0 dimensions; a 1-element one (torch.optim accepts it) is
    viewed as 0-dim (a view: the caller's tensor still drives it)."""
    for group in opt.param_groups:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) and lr.dim() > 0 and lr.numel() == 1:
            group["lr"] = lr.reshape(())


def restart_if_cleared(opt: torch.optim.Optimizer, counters: dict[str, Any]) -> None:
    """An emptied ``state`` (``state.clear()``, a new dict) restarts the optimizer as one built now, as
    torch.optim's own do; these libraries keep counters in the groups, which are reset here."""
    if not opt.state and any(group.get(k) != v for group in opt.param_groups for k, v in counters.items()):
        for group in opt.param_groups:
            for k, v in counters.items():
                if v is None:
                    group.pop(k, None)
                else:
                    group[k] = v


@contextmanager
def float_lr(opt: torch.optim.Optimizer) -> Iterator[None]:
    """For libraries that pass ``lr`` as ``alpha=`` (a Python number only): a tensor lr (torch.optim accepts
    one) is read as a float for the step, then put back, so the caller's tensor still drives it."""
    tensors = [(group, group["lr"]) for group in opt.param_groups if isinstance(group["lr"], torch.Tensor)]
    for group, lr in tensors:
        group["lr"] = float(lr)
    try:
        yield
    finally:
        for group, lr in tensors:
            group["lr"] = lr


LENGTH = "n"  # a flattened list's length (-1 for None)


def flatten_lists(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` post-hook: per-parameter lists of tensors (and ``None`` for a list not yet made), which
    torch.distributed.checkpoint cannot flatten, become dicts ``{"n": length, "0": item 0, ...}`` (nested
    dicts it flattens and rebuilds under the live state's names); an empty item (a dimension left
    unpreconditioned) is left out."""
    state = {}
    for key, entry in state_dict["state"].items():
        state[key] = {
            name: {LENGTH: -1 if value is None else len(value),
                   **{str(i): v for i, v in enumerate(value or []) if not isinstance(v, list)}}
            if value is None or isinstance(value, list) else value
            for name, value in entry.items()
        }
    return {**state_dict, "state": state}


def unflatten_lists(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`flatten_lists`, before torch loads and casts the state."""

    def plain(value: Any) -> Any:
        if not (isinstance(value, dict) and LENGTH in value):
            return value
        n = int(value[LENGTH])
        return None if n < 0 else [value.get(str(i), []) for i in range(n)]

    state = {key: {name: plain(value) for name, value in entry.items()} for key, entry in state_dict["state"].items()}
    return {**state_dict, "state": state}



def betas_pair(name: str, value: Any) -> tuple[float, float]:
    """Two averaging factors, each in [0, 1), as floats; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), each in [0, 1), got {value!r}")
    check_unit_interval(f"{name}[0]", value[0])
    check_unit_interval(f"{name}[1]", value[1])
    return float(value[0]), float(value[1])


def build_peer(name: str, cls: type[torch.optim.Optimizer], model: torch.nn.Module,
               arguments: dict[str, Any]) -> TrainingOptimizer:
    """Registry name ``name``: ``cls`` (a wrapper of this package) on ``model``'s trainable parameters, built
    as an external optimizer would be (:func:`baselines.external.build_external`: the constructor's named
    arguments, parameter groups from a recipe)."""
    check_parameters(trainable_parameters(model), name)
    opt = build_external(f"{cls.__module__}:{cls.__qualname__}", model, arguments)
    opt.name = name
    return opt
