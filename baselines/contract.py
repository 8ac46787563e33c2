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

from collections.abc import Iterable, Mapping, Sequence
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


class ParamLayout:
    """Every group's parameters as an optimizer last saw them: the tensors themselves (so a deepcopy or
    pickle of the optimizer keeps them the same objects as its groups' parameters) and the shape, dtype
    and device each had.

    An optimizer that caches anything derived from its parameters (a flat layout, buffers in their
    dtype, lookups by parameter) checks :meth:`matches` at the start of each step: ``model.double()``,
    ``.to(device)``, ``p.data = ...`` and tensors appended to or swapped in ``param_groups`` by hand all
    break it, and none of them goes through the optimizer. The check reads a few attributes per
    parameter (as the step's own gradient checks do) and allocates nothing."""

    def __init__(self, param_groups: Iterable[Mapping[str, Any]]) -> None:
        self.groups = [list(g["params"]) for g in param_groups]
        self.keys = [[(p.shape, p.dtype, p.device) for p in params] for params in self.groups]

    def matches(self, param_groups: Sequence[Mapping[str, Any]]) -> bool:
        if len(param_groups) != len(self.groups):
            return False
        for group, known, keys in zip(param_groups, self.groups, self.keys):
            params = group["params"]
            if len(params) != len(known):
                return False
            for p, q, (shape, dtype, device) in zip(params, known, keys):
                if p is not q or p.dtype != dtype or p.device != device or p.shape != shape:
                    return False
        return True


def describe_parameter(group: int, index: int, shape: Iterable[int]) -> str:
    """How errors name a parameter: by its place in ``param_groups`` and its shape."""
    return f"parameter {index} of group {group} (shape {tuple(shape)})"


def param_groups_changed(owner: str, problems: list[str], allowed: str) -> ValueError:
    """The error for ``param_groups`` edited by hand in a way ``owner`` cannot follow: ``problems`` says
    what changed (first few), ``allowed`` what the optimizer accepts instead."""
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    return ValueError(f"{owner}: param_groups changed since construction: {shown}; {allowed}")


def check_layout_change(
    owner: str, old: ParamLayout, new_groups: list[list[torch.Tensor]], allowed: str
) -> list[tuple[int, int, torch.Tensor]]:
    """The parameters of ``new_groups`` that ``old`` did not have, as (group, index, parameter);
    ``ValueError`` (:func:`param_groups_changed`) when a parameter of ``old`` is gone or changed shape,
    or one appears twice. Casts and moves are not changes here."""
    before = {id(p): (g, i, key[0]) for g, (params, keys) in enumerate(zip(old.groups, old.keys))
              for i, (p, key) in enumerate(zip(params, keys))}
    problems: list[str] = []
    added: list[tuple[int, int, torch.Tensor]] = []
    seen: dict[int, tuple[int, int]] = {}
    for g, params in enumerate(new_groups):
        for i, p in enumerate(params):
            if id(p) in seen:
                problems.append(f"{describe_parameter(g, i, p.shape)} is parameter {seen[id(p)][1]} of group "
                                f"{seen[id(p)][0]} again (a parameter may appear once)")
                continue
            seen[id(p)] = (g, i)
            if id(p) not in before:
                added.append((g, i, p))
            elif before[id(p)][2] != p.shape:
                problems.append(f"{describe_parameter(g, i, p.shape)} had shape {tuple(before[id(p)][2])}")
    gone = [describe_parameter(g, i, shape) for pid, (g, i, shape) in before.items() if pid not in seen]
    if gone:
        new = [f"{describe_parameter(g, i, p.shape)} is not one this optimizer was built with" for g, i, p in added]
        problems = new[:1] + [f"{gone[0]}, one it was built with (or given since), is no longer there"
                              + (f" (and {len(gone) - 1} more)" if len(gone) > 1 else "")] + problems
    if problems:
        raise param_groups_changed(owner, problems, allowed)
    return added
