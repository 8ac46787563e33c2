"""mL-BFGS: momentum-based L-BFGS for distributed large-scale neural-network optimisation."""

from .blocks import assign_blocks, build_blocks, layer_blocks, load_imbalance
from .config import CurvatureConfig
from .curvature_history import CurvatureHistory
from .damping import damping_factor
from .optimizer import MLBFGS, PairRecord

__all__ = [
    "MLBFGS",
    "CurvatureConfig",
    "CurvatureHistory",
    "PairRecord",
    "assign_blocks",
    "build_blocks",
    "damping_factor",
    "layer_blocks",
    "load_imbalance",
]
__version__ = "0.1.0"
