"""Optimizers named by import path: ``"module.path:Class"`` is any ``torch.optim.Optimizer`` subclass.

    build_optimizer("torch.optim:RAdam", model, lr=3e-3)      # through baselines.registry
    python -m experiments.run --workload mnist1d-mlp --optimizer torch.optim:RAdam --set optimizer.lr=3e-3

The module is imported (it must be importable: installed, or on ``sys.path``/``PYTHONPATH``) and the
attribute after ``:`` looked up (dots walk nested attributes, ``pkg.mod:Outer.Inner``). The class is
constructed as ``Class(params, **arguments)`` with the model's trainable parameters (one param group).

Parameter groups: by default one group of the model's trainable parameters. ``param_groups`` (an
argument of every import path, ``--param-groups module:function`` or ``--set
optimizer.param_groups=module:function``) names a *recipe*, a function from the model to the groups
the constructor gets (e.g. :func:`baselines.recipes.muon_groups`, which sends the hidden layers' matrix
weights to Muon and the rest to AdamW). The groups must hold every trainable parameter once and
nothing else; the recipe's path enters the run id and the manifest like any other setting.

Arguments: the constructor's *named* parameters after the first (the parameters), with the defaults of
its signature. Nothing reaches a ``**kwargs`` of the constructor: an argument must be named in the
signature to be checked and recorded (wrap the class otherwise). An unknown argument, or a missing one
that has no default, is a ``ValueError`` naming it and listing the valid arguments; invalid values are
the constructor's own errors, re-raised as ``ValueError`` with the optimizer's name and arguments.
In the runner the arguments are the workload's ``optimizers`` entry for the path and ``--set
optimizer.x=...`` (passed whole), plus the workload's shared ``optimizer_defaults`` (e.g.
``weight_decay``) only where the constructor names them (``WorkloadConfig.optimizer_settings``): a
shared default is a suggestion for every optimizer, an explicit setting is an order to this one.

Driving (:class:`ExternalOptimizer`): like the built-ins, one gradient evaluation (the runner's
closure: zero the gradients, forward, backward) and then ``optimizer.step()``. A class whose ``step``
*requires* a closure (a first parameter without a default, e.g. ``torch.optim.LBFGS``) is instead
stepped as ``optimizer.step(closure)`` with a closure that takes no argument, re-evaluates the
mini-batch with backward and returns the loss; every call counts one gradient evaluation, and the
step returns the loss of the first. The runner's LR schedule scales each param group's ``lr``
(a constructor whose groups have no ``lr`` is refused); checkpoints hold ``optimizer.state_dict()``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import CountingClosure, TrainingOptimizer, trainable_parameters

SEPARATOR = ":"
EXAMPLE = "torch.optim:RAdam"
#: the argument naming a parameter-group recipe (not passed to the constructor)
PARAM_GROUPS = "param_groups"


def is_import_path(name: object) -> bool:
    """Whether ``name`` has the ``module.path:Name`` form (a string with ``:``); nothing is imported."""
    return isinstance(name, str) and SEPARATOR in name


def check_import_path(path: str, argument: str) -> tuple[str, list[str]]:
    """The module name and attribute chain of ``path`` = ``"module.path:Attr[.Attr]"``.

    Raises ``ValueError`` naming ``argument`` when ``path`` is not of that form (dotted Python
    identifiers on both sides of one ``:``). Nothing is imported.
    """
    module_name, sep, attr_path = path.partition(SEPARATOR) if isinstance(path, str) else ("", "", "")
    ok = bool(sep) and all(p.isidentifier() for p in module_name.split(".")) and all(
        p.isidentifier() for p in attr_path.split("."))
    if not ok:
        raise ValueError(f"{argument}: {path!r} is not an import path of the form 'module.path:Name' "
                         f"(e.g. {EXAMPLE!r})")
    return module_name, attr_path.split(".")


def import_object(path: str, argument: str, kinds: str = "objects",
                  candidate: Callable[[Any], bool] | None = None) -> Any:
    """The object that ``path`` (``"module.path:Name"``) names, importing its module.

    Raises ``ValueError`` naming ``argument`` for a malformed path, a module that does not import
    (with the import's own error), or a missing attribute; the last lists the module's public
    attributes that satisfy ``candidate`` (the allowed ``kinds`` of object, a plural label), when given.
    """
    module_name, attrs = check_import_path(path, argument)
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:  # any error raised while importing the user's module
        raise ValueError(f"{argument}: module {module_name!r} of {path!r} does not import ({type(err).__name__}: "
                         f"{err}); is it installed or on sys.path/PYTHONPATH?") from err
    module = obj
    for i, attr in enumerate(attrs):
        if not hasattr(obj, attr):
            where = ".".join([module_name, *attrs[:i]])
            hint = ""
            if candidate is not None and obj is module:
                found = sorted(n for n, v in vars(module).items() if not n.startswith("_") and candidate(v))
                hint = f"; its {kinds}: {found}" if found else f"; it defines no {kinds}"
            raise ValueError(f"{argument}: {where!r} has no attribute {attr!r} ({path!r}){hint}")
        obj = getattr(obj, attr)
    return obj


def _is_optimizer_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)


def optimizer_class(name: str) -> type[torch.optim.Optimizer]:
    """The ``torch.optim.Optimizer`` subclass that import path ``name`` names.

    Raises ``ValueError`` (naming ``optimizer`` and ``name``) for a malformed path, a module that does
    not import, a missing attribute (listing the module's optimizer classes) or an object that is not
    a ``torch.optim.Optimizer`` subclass.
    """
    obj = import_object(name, "optimizer", "torch.optim.Optimizer subclasses", _is_optimizer_class)
    if not _is_optimizer_class(obj):
        what = f"class {obj.__qualname__}" if isinstance(obj, type) else f"a {type(obj).__name__}"
        raise ValueError(f"optimizer: {name!r} is {what}, not a torch.optim.Optimizer subclass")
    return obj


def constructor_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The named parameters of ``cls.__init__`` after ``self`` and the parameters: the valid arguments."""
    params = list(inspect.signature(cls.__init__).parameters.values())[2:]
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p for p in params if p.kind in named}


@functools.cache
def _config_class(cls: type) -> type:
    fields = []
    for param in constructor_parameters(cls).values():
        if param.default is inspect.Parameter.empty:
            fields.append((param.name, Any))
        elif getattr(type(param.default), "__hash__", None) is None:  # mutable default: copied per instance
            fields.append((param.name, Any, dataclasses.field(
                default_factory=functools.partial(copy.deepcopy, param.default))))
        else:
            fields.append((param.name, Any, dataclasses.field(default=param.default)))
    config = dataclasses.make_dataclass(f"{cls.__name__}Arguments", fields, frozen=True, kw_only=True)
    config.__doc__ = (f"The constructor arguments of {cls.__module__}.{cls.__qualname__} after its parameters, "
                      "with the defaults of its signature (generated from it).")
    return config


def config_class(name: str) -> type:
    """A frozen dataclass of the constructor arguments of optimizer ``name`` (import path), with the
    defaults of its signature; generated from the signature (see the module docstring)."""
    return _config_class(optimizer_class(name))


def default_arguments(name: str) -> dict[str, Any]:
    """The constructor arguments of ``name`` that have defaults, with those defaults (copies)."""
    return {p.name: copy.deepcopy(p.default) for p in constructor_parameters(optimizer_class(name)).values()
            if p.default is not inspect.Parameter.empty}


def accepted_arguments(name: str) -> list[str]:
    """The names of the constructor arguments of ``name``, in signature order, then ``param_groups``."""
    return [*constructor_parameters(optimizer_class(name)), PARAM_GROUPS]


def check_arguments(name: str, arguments: dict[str, Any]) -> None:
    """``ValueError`` for an argument the constructor does not name, or a required one missing;
    the message names the argument(s) and lists the valid arguments."""
    params = constructor_parameters(optimizer_class(name))
    if PARAM_GROUPS in arguments:
        param_group_recipe(arguments[PARAM_GROUPS])
        arguments = {k: v for k, v in arguments.items() if k != PARAM_GROUPS}
    unknown = sorted(set(arguments) - set(params))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for optimizer {name!r}; valid arguments: {sorted(params)} "
                         f"(the named parameters of its constructor), and {PARAM_GROUPS!r} (a recipe)")
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in arguments]
    if missing:
        raise ValueError(f"optimizer {name!r}: argument(s) {missing} have no default and must be given "
                         f"(e.g. --set optimizer.{missing[0]}=...)")


def param_group_recipe(path: Any) -> Callable[[nn.Module], list[dict[str, Any]]]:
    """The function that import path ``path`` names (``"module.path:function"``), taking a model and
    returning its parameter groups. ``ValueError`` naming ``param_groups`` otherwise."""
    if not isinstance(path, str):
        raise ValueError(f"{PARAM_GROUPS}: expected an import path 'module.path:function' of a recipe (a function "
                         f"from the model to its param groups, e.g. 'baselines.recipes:muon_groups'), got {path!r}")
    recipe = import_object(path, PARAM_GROUPS, "functions", inspect.isfunction)
    if not callable(recipe):
        raise ValueError(f"{PARAM_GROUPS}: {path!r} is a {type(recipe).__name__}, not a function of the model")
    return recipe  # type: ignore[no-any-return]


def recipe_groups(path: str, model: nn.Module) -> list[dict[str, Any]]:
    """The param groups recipe ``path`` makes of ``model``, checked to hold every trainable parameter
    of ``model`` once and nothing else (``ValueError`` naming the first parameter that breaks it)."""
    groups = param_group_recipe(path)(model)
    if not isinstance(groups, list) or not all(isinstance(g, dict) and "params" in g for g in groups):
        raise ValueError(f"{PARAM_GROUPS}: {path!r} must return a list of dicts with a 'params' entry, got "
                         f"{type(groups).__name__}")
    names = {id(p): n for n, p in model.named_parameters()}
    seen: set[int] = set()
    for i, group in enumerate(groups):
        group["params"] = list(group["params"])
        for p in group["params"]:
            name = names.get(id(p), f"a tensor of shape {tuple(p.shape)}")
            if id(p) in seen:
                raise ValueError(f"{PARAM_GROUPS}: {path!r} lists parameter {name} twice (again in group {i})")
            if id(p) not in names or not p.requires_grad:
                raise ValueError(f"{PARAM_GROUPS}: {path!r} puts {name} in group {i}, but it is not a trainable "
                                 "parameter of the model")
            seen.add(id(p))
    left = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in seen]
    if left:
        raise ValueError(f"{PARAM_GROUPS}: {path!r} leaves out trainable parameter(s) {left[:3]}; every one must be "
                         "in a group")
    return groups


def describe(name: str) -> str:
    """The first line of the class's docstring, or its qualified name."""
    cls = optimizer_class(name)
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else f"{cls.__module__}.{cls.__qualname__}"


def step_needs_closure(cls: type) -> bool:
    """Whether ``cls.step`` has a first parameter without a default (``torch.optim.LBFGS.step(closure)``)."""
    try:
        params = list(inspect.signature(cls.step).parameters.values())[1:]
    except (TypeError, ValueError):
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return bool(params) and params[0].kind in positional and params[0].default is inspect.Parameter.empty


class ExternalOptimizer(TrainingOptimizer):
    """A ``torch.optim.Optimizer`` named by import path, driven and counted like the built-ins.

    ``needs_closure``: step it as ``optimizer.step(closure)`` (see the module docstring); otherwise
    one evaluation, then ``optimizer.step()``. ``grad_evals_per_step`` is the nominal 1 (a closure-driven
    class spends as many evaluations as it calls, all counted in ``grad_evals``).
    """

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, model: nn.Module | None,
                 needs_closure: bool) -> None:
        super().__init__(name, optimizer, 1.0, model)
        self.needs_closure = needs_closure

    def _step(self, closure: CountingClosure) -> torch.Tensor:
        if not self.needs_closure:
            return super()._step(closure)
        losses: list[torch.Tensor] = []

        def evaluate() -> torch.Tensor:
            loss = closure(backward=True)
            losses.append(loss)
            return loss

        self._optimizer.step(evaluate)
        if not losses:
            raise RuntimeError(f"{self.name}: step(closure) returned without evaluating the closure")
        return losses[0]


def build_external(name: str, model: nn.Module, arguments: dict[str, Any]) -> ExternalOptimizer:
    """Construct optimizer ``name`` (import path) on ``model``'s trainable parameters with ``arguments``.

    Raises ``ValueError`` for a bad name (see :func:`optimizer_class`), bad arguments (see
    :func:`check_arguments`), a constructor that refuses its arguments (its error, with the name and the
    arguments), or param groups without an ``lr`` (the runner's schedule scales it).
    """
    cls = optimizer_class(name)
    check_arguments(name, arguments)
    arguments = dict(arguments)
    recipe = arguments.pop(PARAM_GROUPS, None)
    params = recipe_groups(recipe, model) if recipe is not None else trainable_parameters(model)
    try:
        optimizer = cls(params, **arguments)
    except (ValueError, TypeError, RuntimeError) as err:
        hint = "" if recipe is not None else (
            "; if it expects param groups of its own (Muon: matrix weights and the rest), name a recipe with "
            "--param-groups module:function (e.g. baselines.recipes:muon_groups)")
        raise ValueError(f"optimizer {name!r} with arguments {arguments}: {type(err).__name__}: {err}{hint}") from err
    if any("lr" not in group for group in optimizer.param_groups):
        raise ValueError(f"optimizer {name!r}: its param groups have no 'lr' entry; the runner's learning-rate "
                         "schedule scales param_group['lr'] (only such optimizers can be driven)")
    return ExternalOptimizer(name, optimizer, model, step_needs_closure(cls))
