"""mL-BFGS and its momentum-free ablation (stochastic L-BFGS), both ``mlbfgs.MLBFGS``.

``mlbfgs``: the method of the paper (Niu et al., TMLR 2023) as this project states it
(``shared/spec/mlbfgs.md``: normalised averages, pairs from step 1 every T steps, damped pairs with
rejection, compact form), with the hyper-parameters of the reference run script (yuehniu/mL-BFGS,
run-SLIM.sh / train.py): lr 0.1, momentum 0.9, beta 0.999 (``--mm-p``/``--mm-g``), xi =
pair_momentum 0.9 (``--mmm``), T = update_period 50, M = history_size 10, tau0 = damping 0.01
(``--lbfgs-damping``), curvature bounds (0.01, 1.5), the direction divided by its global norm. Blocks
default to one for the whole model, as in the library: chosen over one per layer, the authors'
partition and one per layer with ``direction_norm="block"`` by the rule of ``analysis/block_defaults.py``
on the three long workloads (``results/figures/block_defaults.md``); per layer, the ResNet's classifier got
almost none of the step. ``blocks="authors"`` is the authors' partition (their block version keeps the
stem and classifier outside one big block on ResNet-18, one block per stage on ResNet-50, one block on
DeiT); one block is our block version, not their whole-model SlimQN (other bounds, rejection and KL
scaling). Their code, behaviour for behaviour, is ``mlbfgs_authors``
and ``slimqn_authors`` (baselines/mlbfgs_authors.py). Weight decay defaults to 0 (the run script's
2e-4 is a workload setting).

``slbfgs``: the same optimizer with beta = 0 and pair_momentum = 0, i.e. pairs
s = theta_t - theta_{t-T}, y = g_t - g_{t-T} from single mini-batch gradients: the unstable
stochastic L-BFGS whose failure motivates the paper. Every other setting equals ``mlbfgs``'s, so
the two differ only in the momentum.

Both take one gradient per step. ``curvature_records()`` reports ``MLBFGS.last_pairs``
(block, mu = s.y / s.s before damping, accepted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from mlbfgs.config import CurvatureConfig

from .base import TrainingOptimizer, trainable_parameters
from .config import check_nonneg, check_unit_interval


@dataclass(frozen=True)
class _QuasiNewtonCommon(CurvatureConfig):
    """The curvature settings and their defaults come from :class:`mlbfgs.CurvatureConfig` (declared
    there once); this adds the update's settings, the blocks and the distribution."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    blocks: Any = "model"  # one block, the library's default; "authors": the authors' partition (authors_blocks)
    process_group: Any = None
    # with a process group: each rank its rows of every block. The library's default, whole blocks per rank, would
    # put the one default block on one rank; without a process group it changes nothing
    shard: str = "rows"
    comm_dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if isinstance(self.curvature_bounds, list):
            object.__setattr__(self, "curvature_bounds", tuple(self.curvature_bounds))
        for name in ("history_dtype", "comm_dtype"):  # JSON configs name dtypes as strings
            value = getattr(self, name)
            if isinstance(value, str):
                object.__setattr__(self, name, _dtype(name, value))
        check_nonneg("lr", self.lr)
        check_unit_interval("momentum", self.momentum)
        check_nonneg("weight_decay", self.weight_decay)
        super().__post_init__()  # the curvature settings (ValueError naming the setting)


_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str, value: str) -> torch.dtype:
    if value not in _DTYPES:
        raise ValueError(f"{name}: expected one of {sorted(_DTYPES)} (or a torch.dtype), got {value!r}")
    return _DTYPES[value]


@dataclass(frozen=True)
class MLBFGSConfig(_QuasiNewtonCommon):
    """``mlbfgs``: the library's defaults (M 10, T 50, beta 0.999, tau0 0.01, bounds (0.01, 1.5),
    global-norm direction) with the authors' run-SLIM.sh values where the library differs: lr 0.1,
    momentum 0.9, xi = pair_momentum 0.9 (the library default is 0: no second smoothing unless
    asked)."""

    pair_momentum: float = 0.9


@dataclass(frozen=True)
class SLBFGSConfig(_QuasiNewtonCommon):
    """``slbfgs``: mL-BFGS's settings with beta = 0 and pair_momentum = 0 fixed (no momentum on the
    pairs); any other value is refused."""

    beta: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("beta", "pair_momentum"):
            if getattr(self, name) != 0.0:
                raise ValueError(f"{name}: slbfgs fixes it at 0 (stochastic L-BFGS without momentum); "
                                 f"use mlbfgs for {name} > 0, got {getattr(self, name)!r}")


class QuasiNewtonTraining(TrainingOptimizer):
    def curvature_records(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.optimizer.last_pairs]  # type: ignore[attr-defined]


def _build(name: str, model: nn.Module, cfg: _QuasiNewtonCommon, **fixed: float) -> TrainingOptimizer:
    from mlbfgs import MLBFGS

    kwargs = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    kwargs.update(fixed)
    if kwargs["blocks"] == "authors":  # the authors' partition; the parameters they leave outside form one block
        from .mlbfgs_authors import authors_blocks

        inside, outside = authors_blocks(model)
        kwargs["blocks"] = inside + ([outside] if outside else [])
    opt = MLBFGS(trainable_parameters(model), **kwargs)
    return QuasiNewtonTraining(name, opt, 1.0, model)


def build_mlbfgs(model: nn.Module, cfg: MLBFGSConfig) -> TrainingOptimizer:
    return _build("mlbfgs", model, cfg)


def build_slbfgs(model: nn.Module, cfg: SLBFGSConfig) -> TrainingOptimizer:
    return _build("slbfgs", model, cfg)
