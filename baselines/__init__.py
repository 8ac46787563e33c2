"""Every optimizer of the mL-BFGS comparison behind one registry.

    from baselines import build_optimizer, available_optimizers
    opt = build_optimizer("kfac", model, lr=0.05)
    loss = opt.step(closure)      # closure(backward=True) evaluates the current mini-batch

Names: sgd, sgd_normalized, adam, adamw, kfac, slbfgs, olbfgs, sqn, mlbfgs.
"""

from .base import Closure, TrainingOptimizer
from .registry import available_optimizers, build_optimizer, config_class, default_config, describe

__all__ = [
    "Closure",
    "TrainingOptimizer",
    "available_optimizers",
    "build_optimizer",
    "config_class",
    "default_config",
    "describe",
]
