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
- ``soap``: ``pytorch_optimizer.SOAP`` (Vyas et al. 2024; Adam in the eigenbases of Shampoo's factors), the
  authors' defaults (:class:`SOAPConfig`).
- ``shampoo``: ``pytorch_optimizer.ScalableShampoo`` (Gupta et al. 2018; Anil et al. 2020, the algorithm of
  Distributed Shampoo, which won AlgoPerf's external-tuning track): blocked factors, grafting, momentum
  (:class:`ShampooConfig`).

Which library: SOAP and Shampoo each have two implementations on PyPI. ``python -m
experiments.bench.peer_implementations`` times both at the same settings (``results/peers/implementations.md``):
pytorch_optimizer's SOAP is faster than heavyball's on both workloads measured, runs eagerly (heavyball compiles
its step, which fails in float64), and follows a rotation of the problem to 1e-4; ScalableShampoo is several
times faster than pytorch_optimizer's plain ``Shampoo`` on the CNN (blocks of 512 instead of one factor per
dimension), where the plain one also stands still until its first root computation.

Weight decay is the workload's, applied as each library applies it: decoupled (AdamW's way) by schedule-free,
Muon (both halves) and SOAP, added to the gradient by ScalableShampoo (its default). Schedule-free trains at a
constant lr after the warm-up, its averaging replacing the schedule (``experiments.runner.spec``).

All four pass the conformance suite (``tests/baselines/test_conformance*.py``), soap refusing by name the one
input it cannot hold (gradients whose outer products overflow), and are checked against their papers' updates
in ``tests/baselines/test_peers.py``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import pytorch_optimizer
import schedulefree
import torch
from torch import nn

from .base import TrainingOptimizer, trainable_parameters
from .config import check_int, check_nonneg, check_positive, check_unit_interval
from .contract import PicklableOptimizer, check_parameters, check_saved_settings
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


@contextmanager
def _float_lr(opt: torch.optim.Optimizer) -> Iterator[None]:
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


_LENGTH = "n"  # a flattened list's length (-1 for None)


def _flatten_lists(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` post-hook: per-parameter lists of tensors (and ``None`` for a list not yet made), which
    torch.distributed.checkpoint cannot flatten, become dicts ``{"n": length, "0": item 0, ...}`` (nested
    dicts it flattens and rebuilds under the live state's names); an empty item (a dimension left
    unpreconditioned) is left out."""
    state = {}
    for key, entry in state_dict["state"].items():
        state[key] = {
            name: {_LENGTH: -1 if value is None else len(value),
                   **{str(i): v for i, v in enumerate(value or []) if not isinstance(v, list)}}
            if value is None or isinstance(value, list) else value
            for name, value in entry.items()
        }
    return {**state_dict, "state": state}


def _unflatten_lists(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`_flatten_lists`, before torch loads and casts the state."""

    def plain(value: Any) -> Any:
        if not (isinstance(value, dict) and _LENGTH in value):
            return value
        n = int(value[_LENGTH])
        return None if n < 0 else [value.get(str(i), []) for i in range(n)]

    state = {key: {name: plain(value) for name, value in entry.items()} for key, entry in state_dict["state"].items()}
    return {**state_dict, "state": state}


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


def _betas(name: str, value: Any) -> tuple[float, float]:
    """Two averaging factors, each in [0, 1), as floats; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), each in [0, 1), got {value!r}")
    check_unit_interval(f"{name}[0]", value[0])
    check_unit_interval(f"{name}[1]", value[1])
    return float(value[0]), float(value[1])


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
        object.__setattr__(self, "betas", _betas("betas", self.betas))
        check_positive("eps", self.eps)
        check_nonneg("weight_decay", self.weight_decay)
        check_int("warmup_steps", self.warmup_steps, minimum=0)


@dataclass(frozen=True)
class MuonConfig:
    """``muon``: Muon lr 0.02, momentum 0.95 (Nesterov), AdamW lr 3e-4 betas (0.9, 0.95) for the rest; weight
    decay (the workload's) decoupled, in both halves."""

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
        object.__setattr__(self, "adamw_betas", _betas("adamw_betas", self.adamw_betas))


def build_adamw_schedulefree(model: nn.Module, cfg: AdamWScheduleFreeConfig) -> TrainingOptimizer:
    check_parameters(trainable_parameters(model), "adamw_schedulefree")
    opt = build_external("baselines.peers:AdamWScheduleFree", model, asdict(cfg))
    opt.name = "adamw_schedulefree"
    opt.train_mode()  # the library starts in eval mode and refuses to step there
    return opt


def build_muon(model: nn.Module, cfg: MuonConfig) -> TrainingOptimizer:
    check_parameters(trainable_parameters(model), "muon")
    # the workload's weight decay reaches both halves (the library's AdamW half defaults to none)
    arguments: dict[str, Any] = {**asdict(cfg), "adamw_wd": cfg.weight_decay,
                                 "param_groups": "baselines.recipes:muon_groups"}
    opt = build_external("baselines.peers:Muon", model, arguments)
    opt.name = "muon"
    return opt


class SOAP(PicklableOptimizer, pytorch_optimizer.SOAP):
    """pytorch_optimizer's SOAP (the authors' algorithm and defaults), kept whole by deepcopy and pickle,
    restarting when its state is cleared, taking a tensor lr, and checkpointed with its per-parameter lists
    (the Kronecker factors and eigenbases) flattened to tensors (torch.distributed.checkpoint needs them so).

    Gradients large enough that their outer products overflow (|g| about 1e19 in float32) leave no eigenbasis
    to compute: that is refused by name, where the library's eigensolver fails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_state_dict_post_hook(_flatten_lists)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # the library restores types from the dict it was given, after torch's loading: it must get the lists
        super().load_state_dict(_unflatten_lists(self, state_dict))

    # the constructor's named parameters stay the library's (import-path users and the argument check see them)
    __init__.__signature__ = inspect.signature(pytorch_optimizer.SOAP.__init__)  # type: ignore[attr-defined]

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        _restart_if_cleared(self, {"step": None})
        with _float_lr(self):
            try:
                return super().step(closure)
            except torch.linalg.LinAlgError as err:
                raise FloatingPointError(
                    "soap: the eigenbasis of a Kronecker factor (sum of g g^T) could not be computed: the factor is "
                    "not finite, from NaN or infinite gradients, or from gradients past the square root of the "
                    f"dtype's largest value (about 1e19 in float32), where g g^T overflows: scale the loss down ({err})"
                ) from err


class Shampoo(PicklableOptimizer, pytorch_optimizer.ScalableShampoo):
    """pytorch_optimizer's ScalableShampoo (Anil et al. 2020, the algorithm of Distributed Shampoo), kept whole
    by deepcopy and pickle, restarting when its state is cleared, taking a tensor lr, and checkpointed as
    tensors: the library keeps each parameter's preconditioner and graft as Python objects, which a
    ``weights_only`` load and torch.distributed.checkpoint refuse; ``state_dict()`` writes their tensors, and
    ``load_state_dict`` rebuilds the objects as the library's first step would and puts the tensors back,
    after comparing the settings that shape them (:attr:`SHAPING`) with the saved ones. The library's root
    iteration draws from torch's random generator: each step draws from a stream seeded by its step count
    instead, so resuming repeats it and the caller's random streams are untouched."""

    _OBJECTS = ("pre_conditioner", "graft")
    # the settings that shape the objects' tensors: a checkpoint records them, and loading compares them
    SHAPING = ("block_size", "shape_interpretation", "pre_conditioner_type", "graft_type",
               "skip_preconditioning_rank_lt", "no_preconditioning_for_layers_with_dim_gt", "inverse_exponent_override")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_state_dict_post_hook(_objects_as_tensors)

    def shaping_settings(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in self.SHAPING}

    __init__.__signature__ = inspect.signature(pytorch_optimizer.ScalableShampoo.__init__)  # type: ignore[attr-defined]

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        _restart_if_cleared(self, {"step": None})
        # the library's root iteration starts from torch.randn: drawn here from a stream seeded by the step, so
        # a resumed run repeats it and the caller's random streams (dropout, data order) are left where they were
        cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
        with _float_lr(self), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(int(self.param_groups[0].get("step", 0)))
            return super().step(closure)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        now = self.shaping_settings()
        for entry in state_dict["state"].values():
            if "pre_conditioner" in entry:
                check_saved_settings("shampoo", entry["pre_conditioner"].get("settings"), now)
        saved = {key: {name: entry[name] for name in self._OBJECTS if name in entry}
                 for key, entry in state_dict["state"].items()}
        rest = {key: {name: v for name, v in entry.items() if name not in self._OBJECTS}
                for key, entry in state_dict["state"].items()}
        # the objects are rebuilt after torch's loading: post-hooks run once they are in place
        post_hooks, self._optimizer_load_state_dict_post_hooks = self._optimizer_load_state_dict_post_hooks, {}
        try:
            super().load_state_dict({**state_dict, "state": rest})
        finally:
            self._optimizer_load_state_dict_post_hooks = post_hooks
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"], strict=True):
            for p, key in zip(group["params"], saved_group["params"], strict=True):
                if saved.get(key):
                    self._rebuild_objects(p, group, saved[key])
        for hook in list(post_hooks.values()):
            hook(self)

    def _rebuild_objects(self, p: torch.Tensor, group: dict[str, Any], saved: dict[str, Any]) -> None:
        state = self.state[p]
        state["pre_conditioner"] = pytorch_optimizer.optimizer.shampoo.PreConditioner(
            p, group["betas"][1], self.inverse_exponent_override, self.block_size, self.skip_preconditioning_rank_lt,
            self.no_preconditioning_for_layers_with_dim_gt, self.shape_interpretation, self.pre_conditioner_type,
            self.matrix_eps, self.use_svd)
        state["graft"] = pytorch_optimizer.optimizer.shampoo.build_graft(p, self.graft_type, self.diagonal_eps)
        for name, attributes in saved.items():
            obj = state[name]
            for attr, value in attributes.items():
                if attr == "settings":
                    continue
                live = getattr(obj, attr)
                if isinstance(live, torch.Tensor):
                    setattr(obj, attr, value.to(device=live.device, dtype=live.dtype))
                else:
                    items = _as_list(value)
                    setattr(obj, attr, [v.to(device=live[i].device, dtype=live[i].dtype) for i, v in enumerate(items)])


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value[str(i)] for i in range(int(value[_LENGTH]))]
    return list(value)


def _objects_as_tensors(opt: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """``state_dict`` post-hook of :class:`Shampoo`: its per-parameter objects as dicts of their tensors (a
    list of tensors as ``{"n": length, "0": item 0, ...}``)."""

    def tensors(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for attr, value in vars(obj).items():
            if isinstance(value, torch.Tensor):
                out[attr] = value
            elif isinstance(value, list) and value and all(isinstance(v, torch.Tensor) for v in value):
                out[attr] = {_LENGTH: len(value), **{str(i): v for i, v in enumerate(value)}}
        return out

    settings = opt.shaping_settings() if isinstance(opt, Shampoo) else {}
    state = {key: {name: ({**tensors(v), "settings": settings} if name == "pre_conditioner" else tensors(v))
                   if name in Shampoo._OBJECTS else v for name, v in entry.items()}
             for key, entry in state_dict["state"].items()}
    return {**state_dict, "state": state}


@dataclass(frozen=True)
class SOAPConfig:
    """``soap``: the SOAP authors' defaults (Vyas et al. 2024, as pytorch_optimizer keeps them): lr 3e-3, betas
    (0.95, 0.95), shampoo_beta 0.95, eigenbases refreshed every 10 steps, factors up to 10,000 wide, weight decay 0
    (a workload setting, as for every optimizer here)."""

    lr: float = 3e-3
    betas: tuple[float, float] = (0.95, 0.95)
    shampoo_beta: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.0
    precondition_frequency: int = 10

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        object.__setattr__(self, "betas", _betas("betas", self.betas))
        check_unit_interval("shampoo_beta", self.shampoo_beta)
        check_positive("eps", self.eps)
        check_nonneg("weight_decay", self.weight_decay)
        check_int("precondition_frequency", self.precondition_frequency, minimum=1)


@dataclass(frozen=True)
class ShampooConfig:
    """``shampoo``: the library's defaults (betas (0.9, 0.999), Nesterov, SGD grafting, blocks of 512, roots from
    step 25) with the roots recomputed every 10 steps, as SOAP's eigenbases (its default, 1000, would refresh a
    1,872-iteration run once), and lr 0.1, ``sgd``'s: SGD grafting gives every tensor the length of SGD's step
    (the library's generic lr 1e-3 leaves it a hundredth of that). Distributed Shampoo grafts Adam; the
    library's RMSProp grafting, tried first, did not lower the training loss of the CNN in
    ``tests/baselines/test_training.py`` at any lr from 1e-4 to 3e-2, where SGD grafting does.

    Two ways the library departs from Distributed Shampoo: a tensor of at most ``block_size`` elements gets the
    graft's step alone (the reference preconditions it as one dimension), and merging small dimensions can add
    a dimension of size 1, which raises the root's order (inverse 6th instead of 4th roots for a (768, 192)
    matrix). Neither touches the long workloads' matrices above ``block_size`` elements."""

    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    preconditioning_compute_steps: int = 10
    start_preconditioning_step: int = 25
    block_size: int = 512

    def __post_init__(self) -> None:
        check_nonneg("lr", self.lr)
        object.__setattr__(self, "betas", _betas("betas", self.betas))
        check_nonneg("weight_decay", self.weight_decay)
        check_int("preconditioning_compute_steps", self.preconditioning_compute_steps, minimum=1)
        check_int("start_preconditioning_step", self.start_preconditioning_step, minimum=1)
        check_int("block_size", self.block_size, minimum=2)


def build_soap(model: nn.Module, cfg: SOAPConfig) -> TrainingOptimizer:
    check_parameters(trainable_parameters(model), "soap")
    opt = build_external("baselines.peers:SOAP", model, asdict(cfg))
    opt.name = "soap"
    return opt


def build_shampoo(model: nn.Module, cfg: ShampooConfig) -> TrainingOptimizer:
    check_parameters(trainable_parameters(model), "shampoo")
    opt = build_external("baselines.peers:Shampoo", model, asdict(cfg))
    opt.name = "shampoo"
    return opt
