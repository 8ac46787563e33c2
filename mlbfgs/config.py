"""Curvature settings of mL-BFGS, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

DIRECTION_NORMS = ("global", "kl", "none", "block")
HISTORY_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class CurvatureConfig:
    r"""Settings shared by every block (they define the curvature estimate, not the update).

    Defaults are the authors' (run-SLIM.sh): M = 10, T = 50, beta = 0.999, tau0 = 0.01,
    (sigma_L, sigma_H) = (0.01, 1.5). ``pair_momentum`` (xi) is 0.9 in their runs; 0 here disables
    the second smoothing unless asked for.

    Attributes:
        history_size: M, pairs kept per block.
        update_period: T, steps between pairs.
        beta: EMA factor of parameters and gradients.
        pair_momentum: xi, second smoothing of consecutive pairs (0 disables).
        damping: tau0 in [0, 1): every damped ``y_hat`` mixes in at least this share of ``s``.
        curvature_bounds: (sigma_L, sigma_H) for ``s.y_hat / s.s``.
        direction_norm: ``"global"``, ``"kl"``, ``"none"`` or ``"block"``. With ``"global"`` the step
            length is ``lr`` whatever the gradient's size: it does not shrink as the gradient does, so
            ``ReduceLROnPlateau`` and warm-up act on the step length itself, unlike with SGD.
            ``"block"`` first scales each block's direction to its gradient's norm,
            ``d_b \lVert g_b \rVert / \lVert d_b \rVert``, then divides by the global norm: the curvature
            turns each block's step but no longer moves step length between blocks (with per-layer
            blocks, ``\gamma_b \approx 1/\mu_b`` otherwise hands most of the step to the flattest
            layers). Whole blocks only (not with row sharding).
        kl_clip: kappa of the ``"kl"`` rescaling.
        history_dtype: dtype of the ring (default: float32, or float64 for float64 parameters);
            bfloat16/float16 halve the bytes read per step (rows stored normalised, see
            :mod:`mlbfgs.curvature.history`).
        check_finite: skip the whole step (and count it) when the gradient has a non-finite entry,
            so it never enters the averages. Costs one host synchronisation per step.
        min_curvature: a damped pair with ``s.y_hat`` at or below this is rejected.
    """

    history_size: int = 10
    update_period: int = 50
    beta: float = 0.999
    pair_momentum: float = 0.0
    damping: float = 0.01
    curvature_bounds: tuple[float, float] = (0.01, 1.5)
    direction_norm: str = "global"
    kl_clip: float = 0.005
    min_curvature: float = 1e-12
    history_dtype: torch.dtype | None = None
    check_finite: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.history_size, bool) or not isinstance(self.history_size, int) or self.history_size < 1:
            raise ValueError(f"history_size: expected an int >= 1, got {self.history_size!r}")
        if isinstance(self.update_period, bool) or not isinstance(self.update_period, int) or self.update_period < 1:
            raise ValueError(f"update_period: expected an int >= 1, got {self.update_period!r}")
        _unit_interval("beta", self.beta)
        _unit_interval("pair_momentum", self.pair_momentum)
        _unit_interval("damping", self.damping)
        bounds = tuple(self.curvature_bounds)
        if len(bounds) != 2 or not (0.0 < bounds[0] <= 1.0 <= bounds[1]):
            raise ValueError(
                "curvature_bounds: expected (sigma_L, sigma_H) with 0 < sigma_L <= 1 <= sigma_H, "
                f"got {self.curvature_bounds!r}"
            )
        object.__setattr__(self, "curvature_bounds", (float(bounds[0]), float(bounds[1])))
        if self.direction_norm not in DIRECTION_NORMS:
            raise ValueError(f"direction_norm: expected one of {DIRECTION_NORMS}, got {self.direction_norm!r}")
        if not self.kl_clip > 0.0:
            raise ValueError(f"kl_clip: expected a value > 0, got {self.kl_clip!r}")
        if not self.min_curvature >= 0.0:
            raise ValueError(f"min_curvature: expected a value >= 0, got {self.min_curvature!r}")
        if self.history_dtype is not None and self.history_dtype not in HISTORY_DTYPES:
            raise ValueError(f"history_dtype: expected None or one of {HISTORY_DTYPES}, got {self.history_dtype!r}")


#: The names of the curvature settings (shared by all parameter groups).
CURVATURE_SETTINGS: tuple[str, ...] = tuple(CurvatureConfig.__dataclass_fields__)


def _unit_interval(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ValueError(f"{name}: expected a value in [0, 1), got {value!r}")


def check_group_values(lr: Any, momentum: Any, weight_decay: Any) -> None:
    """Raise ``ValueError`` naming the setting when a group's ``lr``, ``momentum`` or ``weight_decay`` is
    out of range (checked at construction and for every group added)."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError(f"lr: a tensor lr must hold one element, got shape {tuple(lr.shape)}")
        ok = bool(lr.detach().cpu().reshape(()) >= 0)
    else:
        ok = isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr >= 0
    if not ok:
        raise ValueError(f"lr: expected a value >= 0 (float or 1-element tensor), got {lr!r}")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum: expected a value in [0, 1), got {momentum!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0.0):
        raise ValueError(f"weight_decay: expected a value >= 0, got {weight_decay!r}")


def check_repeated_settings(group: dict[str, Any], config: CurvatureConfig) -> None:
    """A group may repeat a curvature setting with the optimizer's own value: wrappers copy every
    constructor argument into each group (SAM builds ``base(self.param_groups, **kwargs)``,
    ``ZeroRedundancyOptimizer`` its defaults). ``ValueError`` naming the first setting given per
    group with another value, since the curvature settings are shared by all groups."""
    for name in CURVATURE_SETTINGS:
        if name not in group:
            continue
        value, own = group[name], getattr(config, name)
        if name == "curvature_bounds" and isinstance(value, (list, tuple)) and len(value) == 2:
            value = (float(value[0]), float(value[1]))
        if value != own:
            raise ValueError(
                f"param groups: {name}={group[name]!r} differs from the optimizer's {name}={own!r}; curvature "
                "settings are shared by all groups: pass them to MLBFGS(...) (a group may repeat them only "
                "with the same value, as wrappers such as SAM and ZeroRedundancyOptimizer do)"
            )
