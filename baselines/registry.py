"""One registry for every optimizer of the comparison, and for any ``torch.optim.Optimizer`` by import path.

    opt = build_optimizer(name, model, **config)   # -> TrainingOptimizer
    available_optimizers()                         # -> the built-in names
    build_optimizer("torch.optim:RAdam", model, lr=3e-3)   # any Optimizer subclass: "module.path:Class"

Each entry names the module holding the optimizer, its config dataclass (defaults and their sources
are documented there) and its builder. Modules are imported on first use, so ``import baselines``
stays light and an optimizer whose dependency is missing fails only when it is built.

A name with ``:`` is an import path (:mod:`baselines.external`): every function here accepts it, its
"config" being the constructor's named arguments with the defaults of its signature. It is not
listed by :func:`available_optimizers`, which stays the list of built-in names.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from . import external
from .base import TrainingOptimizer
from .config import make_config


@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    module: str
    config: str
    builder: str
    summary: str
    sparse_gradients: bool = False  # trains parameters with sparse gradients (nn.Embedding(sparse=True))
    requires: tuple[str, ...] = ()  # optional PyPI distributions its module imports (the peers' libraries)
    schedule_free: bool = False  # averages its iterates in place of an lr schedule (train()/eval() modes)


# The peers' libraries (baselines/peers/), pinned in requirements.txt: optional for the library, installed by
# run_all.sh and CI. Each peer's module imports only its own.
PYTORCH_OPTIMIZER, SCHEDULEFREE = "pytorch-optimizer", "schedulefree"

_ENTRIES: dict[str, OptimizerEntry] = {
    e.name: e
    for e in (
        OptimizerEntry("sgd", "sgd", "SGDConfig", "build_sgd", "SGD with momentum (torch.optim.SGD)", True),
        OptimizerEntry(
            "sgd_normalized", "sgd", "NormalizedSGDConfig", "build_sgd_normalized",
            "momentum SGD on the globally normalised gradient (the mL-BFGS authors' 'SGD')", True,
        ),
        OptimizerEntry("adam", "adam", "AdamConfig", "build_adam", "Adam (torch.optim.Adam)"),
        OptimizerEntry("adamw", "adam", "AdamWConfig", "build_adamw", "AdamW (torch.optim.AdamW)"),
        OptimizerEntry(
            "kfac", "kfac", "KFACConfig", "build_kfac", "K-FAC (Martens & Grosse 2015; KFC for conv layers)"
        ),
        OptimizerEntry(
            "slbfgs", "quasi_newton", "SLBFGSConfig", "build_slbfgs",
            "stochastic L-BFGS without momentum (mL-BFGS with beta = 0)",
        ),
        OptimizerEntry(
            "olbfgs", "olbfgs", "OLBFGSConfig", "build_olbfgs",
            "online L-BFGS (Schraudolph, Yu & Guenter 2007), 2 gradients per step",
        ),
        OptimizerEntry(
            "sqn", "sqn", "SQNConfig", "build_sqn",
            "stochastic quasi-Newton (Byrd, Hansen, Nocedal & Singer 2016), HVP pairs",
        ),
        OptimizerEntry(
            "mlbfgs", "quasi_newton", "MLBFGSConfig", "build_mlbfgs", "momentum L-BFGS (Niu et al. 2023)"
        ),
        OptimizerEntry(
            "mlbfgs_authors", "mlbfgs_authors", "MLBFGSAuthorsConfig", "build_mlbfgs_authors",
            "the authors' block mL-BFGS reproduced behaviour for behaviour (BlockSlimQN, opt/slimblock.py)",
        ),
        OptimizerEntry(
            "slimqn_authors", "mlbfgs_authors", "SlimQNAuthorsConfig", "build_slimqn_authors",
            "the authors' whole-model mL-BFGS reproduced (SlimQN, opt/slim.py)",
        ),
        OptimizerEntry(
            "adamw_schedulefree", "peers.adamw_schedulefree", "AdamWScheduleFreeConfig", "build_adamw_schedulefree",
            "schedule-free AdamW (Defazio et al. 2024; the schedulefree library)", requires=(SCHEDULEFREE,),
            schedule_free=True,
        ),
        OptimizerEntry(
            "muon", "peers.muon", "MuonConfig", "build_muon",
            "Muon for hidden matrices, AdamW for the rest (Jordan et al. 2024; pytorch_optimizer.Muon)",
            requires=(PYTORCH_OPTIMIZER,),
        ),
        OptimizerEntry(
            "soap", "peers.soap", "SOAPConfig", "build_soap",
            "SOAP: Adam in Shampoo's eigenbasis (Vyas et al. 2024; pytorch_optimizer.SOAP)",
            requires=(PYTORCH_OPTIMIZER,),
        ),
        OptimizerEntry(
            "shampoo", "peers.shampoo", "ShampooConfig", "build_shampoo",
            "Shampoo with grafting (Anil et al. 2020; pytorch_optimizer.ScalableShampoo)",
            requires=(PYTORCH_OPTIMIZER,),
        ),
    )
}


def available_optimizers() -> list[str]:
    """The built-in optimizer names, in a fixed order (import paths ``module:Class`` are accepted too)."""
    return list(_ENTRIES)


def _unknown(name: object) -> ValueError:
    hint = ""
    if isinstance(name, str) and "." in name:
        module, _, cls = name.rpartition(".")
        hint = f" (did you mean {module + external.SEPARATOR + cls!r}?)"
    return ValueError(f"optimizer must be one of {available_optimizers()} (the valid names) or an import path "
                      f"'module.path:Class' naming a torch.optim.Optimizer subclass (e.g. {external.EXAMPLE!r}), "
                      f"got {name!r}{hint}")


def _entry(name: str) -> OptimizerEntry:
    try:
        return _ENTRIES[name]
    except (KeyError, TypeError):
        raise _unknown(name) from None


def _module(entry: OptimizerEntry) -> Any:
    try:
        return importlib.import_module(f"{__package__}.{entry.module}")
    except ModuleNotFoundError as err:
        if not entry.requires:
            raise
        raise ModuleNotFoundError(
            f"optimizer {entry.name!r} needs {', '.join(entry.requires)} ({err}); install them with "
            f"pip install -r requirements.txt (pinned there)", name=err.name) from err


def is_schedule_free(name: str) -> bool:
    """Whether optimizer ``name`` replaces the lr schedule by averaging its iterates (it then has ``train()`` and
    ``eval()`` modes): a built-in marked so, or an import path whose class has both methods."""
    if external.is_import_path(name):
        cls = external.optimizer_class(name)
        return callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None))
    return _entry(name).schedule_free


def installed_optimizers() -> list[str]:
    """The built-in names whose optional libraries import here (all of :func:`available_optimizers` where
    the peers' libraries are installed)."""
    names = []
    for name, entry in _ENTRIES.items():
        try:
            _module(entry)
        except ModuleNotFoundError:
            continue
        names.append(name)
    return names


def is_import_path(name: object) -> bool:
    """Whether ``name`` is an import path ``module.path:Class`` rather than a built-in name."""
    return external.is_import_path(name)


def check_optimizer_name(name: str, *, resolve: bool = True) -> None:
    """``ValueError`` (listing the valid names and the import-path form) unless ``name`` is a built-in
    name or an import path; with ``resolve``, the path's module is imported and the class checked to be
    a ``torch.optim.Optimizer`` subclass (see :func:`baselines.external.optimizer_class`)."""
    if external.is_import_path(name):
        if resolve:
            external.optimizer_class(name)
        else:
            external.check_import_path(name, "optimizer")
        return
    _entry(name)


def config_class(name: str) -> type:
    """The config dataclass of optimizer ``name`` (for an import path: generated from the constructor)."""
    if external.is_import_path(name):
        return external.config_class(name)
    entry = _entry(name)
    return getattr(_module(entry), entry.config)


def default_config(name: str) -> dict[str, Any]:
    """The default hyper-parameters of optimizer ``name`` as a dict (for an import path: the constructor
    arguments that have defaults in its signature)."""
    if external.is_import_path(name):
        return external.default_arguments(name)
    return dataclasses.asdict(config_class(name)())


def accepted_arguments(name: str) -> list[str]:
    """The argument names ``build_optimizer(name, ...)`` accepts."""
    if external.is_import_path(name):
        return external.accepted_arguments(name)
    return [f.name for f in dataclasses.fields(config_class(name))]


def check_settings(name: str, settings: dict[str, Any]) -> None:
    """``ValueError`` naming an unknown argument (and listing the valid ones), or, for a built-in, an invalid
    value; for an import path also a required argument that is missing. Builds nothing."""
    if external.is_import_path(name):
        external.check_arguments(name, settings)
    else:
        make_config(config_class(name), name, settings)


def describe(name: str) -> str:
    """One line saying what optimizer ``name`` is (for an import path: its docstring's first line)."""
    if external.is_import_path(name):
        return external.describe(name)
    return _entry(name).summary


def build_optimizer(name: str, model: nn.Module, **config: Any) -> TrainingOptimizer:
    """Build optimizer ``name`` for ``model``; ``config`` overrides its documented defaults.

    ``name`` is a built-in name (:func:`available_optimizers`) or an import path ``"module.path:Class"``
    of a ``torch.optim.Optimizer`` subclass, built by :func:`baselines.external.build_external`.

    Raises ``ValueError`` for an unknown name (listing the valid names), an unknown argument
    (listing the valid arguments), an invalid value (naming the argument), or a module with sparse
    gradients for an optimizer that needs dense ones (naming the module and parameter); for an import
    path also a module that does not import, a missing attribute or a class that is not an optimizer.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if external.is_import_path(name):
        return external.build_external(name, model, config)
    entry = _entry(name)
    if not entry.sparse_gradients:
        for module_name, module in model.named_modules():
            if getattr(module, "sparse", False) is True:
                params = [n for n, p in module.named_parameters(recurse=False) if p.requires_grad]
                if params:
                    raise ValueError(
                        f"{name}: parameter {module_name}.{params[0]} gets sparse gradients "
                        f"({type(module).__name__}(sparse=True)); {name} needs dense gradients: use sparse=False, "
                        "or sgd"
                    )
    module = _module(entry)
    cfg = make_config(getattr(module, entry.config), name, config)
    return getattr(module, entry.builder)(model, cfg)
