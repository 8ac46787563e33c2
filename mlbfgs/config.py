"""Curvature settings of mL-BFGS, validated in one place."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DIRECTION_NORMS = ("global", "kl", "none", "block")
HISTORY_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class CurvatureConfig:
    """Settings shared by every block (they define the curvature estimate, not the update).

    Defaults are the authors' (run-SLIM.sh): M = 10, T = 50, beta = 0.999, tau0 = 0.01,
    (sigma_L, sigma_H) = (0.01, 1.5). ``pair_momentum`` (xi) is 0.9 in their runs; 0 here disables
    the second smoothing unless asked for.
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
