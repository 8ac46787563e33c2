"""Every optimizer of the mL-BFGS comparison behind one registry.

    from baselines import build_optimizer, available_optimizers
    opt = build_optimizer("kfac", model, lr=0.05)
    loss = opt.step(closure)      # closure(backward=True) evaluates the current mini-batch

Names: ``available_optimizers()``; the peers among them need their optional libraries (``installed_optimizers()``).
"""

from .base import Closure, TrainingOptimizer
from .registry import (
    available_optimizers,
    build_optimizer,
    config_class,
    default_config,
    describe,
    installed_optimizers,
)

__all__ = [
    "Closure",
    "TrainingOptimizer",
    "available_optimizers",
    "installed_optimizers",
    "build_optimizer",
    "config_class",
    "default_config",
    "describe",
]
