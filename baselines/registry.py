"""One registry for every optimizer of the comparison.

    opt = build_optimizer(name, model, **config)   # -> TrainingOptimizer
    available_optimizers()                         # -> the valid names

Each entry names the module holding the optimizer, its config dataclass (defaults and their sources
are documented there) and its builder. Modules are imported on first use, so ``import baselines``
stays light and an optimizer whose dependency is missing fails only when it is built.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

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
    )
}


def available_optimizers() -> list[str]:
    """The registered optimizer names, in a fixed order."""
    return list(_ENTRIES)


def _entry(name: str) -> OptimizerEntry:
    try:
        return _ENTRIES[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown optimizer {name!r}; valid names: {available_optimizers()}") from None


def _module(entry: OptimizerEntry) -> Any:
    return importlib.import_module(f"{__package__}.{entry.module}")


def config_class(name: str) -> type:
    """The config dataclass of optimizer ``name``."""
    entry = _entry(name)
    return getattr(_module(entry), entry.config)


def default_config(name: str) -> dict[str, Any]:
    """The default hyper-parameters of optimizer ``name`` as a dict."""
    return dataclasses.asdict(config_class(name)())


def describe(name: str) -> str:
    """One line saying what optimizer ``name`` is."""
    return _entry(name).summary


def build_optimizer(name: str, model: nn.Module, **config: Any) -> TrainingOptimizer:
    """Build optimizer ``name`` for ``model``; ``config`` overrides its documented defaults.

    Raises ``ValueError`` for an unknown name (listing the valid names), an unknown argument
    (listing the valid arguments), an invalid value (naming the argument), or a module with sparse
    gradients for an optimizer that needs dense ones (naming the module and parameter).
    """
    entry = _entry(name)
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
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
