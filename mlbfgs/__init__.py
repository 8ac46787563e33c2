"""mL-BFGS: momentum-based L-BFGS for distributed large-scale neural-network optimisation."""

from . import state_keys
from .blocks import assign_blocks, build_blocks, check_supported, layer_blocks, load_imbalance
from .config import CurvatureConfig
from .curvature import CurvatureHistory
from .damping import damping_factor
from .distribution import CommunicationBytes
from .optimizer import MLBFGS
from .pairs import PairRecord

__all__ = [
    "MLBFGS",
    "CommunicationBytes",
    "CurvatureConfig",
    "CurvatureHistory",
    "PairRecord",
    "assign_blocks",
    "build_blocks",
    "check_supported",
    "damping_factor",
    "layer_blocks",
    "load_imbalance",
    "state_keys",
]
# the one place the version is written: pyproject.toml reads it (tool.setuptools.dynamic)
__version__ = "0.2.0"
