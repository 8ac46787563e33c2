"""Names of the entries MLBFGS keeps in ``optimizer.state`` (one place, so code and tests agree).

``state[p]`` of a parameter ``p`` may hold:

- ``MOMENTUM_BUFFER``: the update's momentum buffer (shape of ``p``), as in ``torch.optim.SGD``;
- ``BLOCK_INDEX``: the block ``p`` belongs to (every parameter, so each holds state, as the strict
  loading of ``torch.distributed.checkpoint.state_dict`` expects);
- ``BLOCK`` (first parameter of each block the rank owns): that block's curvature state, a dict
  with the keys below and those of :mod:`mlbfgs.curvature.history`;
- ``GLOBAL`` (first parameter of the optimizer, every rank): counters and the settings.
- ``ROWS`` (every parameter, row-sharded only: FSDP2, or DDP with ``shard="rows"``): DTensor views of
  the rank's rows of the block's averages, anchors (keys below) and ring (``HISTORY``, shaped
  ``(2m, *p.shape)``, sharded on dim 1); ``BLOCK`` then holds only the replicated part (Gram and
  compact matrices, gamma, counters).
"""

from .config import CURVATURE_SETTINGS
from .curvature.history import COMPACT, GAMMA, GRAM, HEAD, HISTORY, NUM_PAIRS, ROW_NORMS

MOMENTUM_BUFFER = "momentum_buffer"
BLOCK_INDEX = "block_index"  # every parameter: the block holding its curvature (int)
BLOCK = "mlbfgs_block"
GLOBAL = "mlbfgs"
ROWS = "mlbfgs_rows"  # row-sharded: per parameter, its rows of the block's vectors and ring (DTensors)

# inside BLOCK: flat vectors of the block's elements, in the working dtype
PARAM_AVG = "param_avg"  # P, the average of the parameters
GRAD_AVG = "grad_avg"  # G, the average of the gradients
PARAM_ANCHOR = "param_anchor"  # P_0, P when the last pair was formed
GRAD_ANCHOR = "grad_anchor"  # G_0
S_PREV = "s_prev"  # the previous pair (pair_momentum > 0 only)
Y_PREV = "y_prev"
PAIRS_FORMED = "pairs_formed"  # ints
PAIRS_ACCEPTED = "pairs_accepted"
PAIRS_REJECTED = "pairs_rejected"

# inside GLOBAL
STEP = "step"  # steps taken (skipped ones excluded)
SKIPPED_STEPS = "skipped_steps"  # steps skipped for a non-finite gradient
WORLD_SIZE = "world_size"
BLOCK_SIZES = "block_sizes"
SETTINGS = "settings"  # the CurvatureConfig as plain values, checked on load

__all__ = [
    "BLOCK", "BLOCK_INDEX", "BLOCK_SIZES", "COMPACT", "CURVATURE_SETTINGS", "GAMMA", "GLOBAL", "GRAD_ANCHOR",
    "GRAD_AVG",
    "GRAM", "HEAD", "HISTORY", "MOMENTUM_BUFFER", "NUM_PAIRS", "PAIRS_ACCEPTED", "PAIRS_FORMED",
    "PAIRS_REJECTED", "PARAM_ANCHOR", "PARAM_AVG", "ROWS", "ROW_NORMS", "SETTINGS", "SKIPPED_STEPS", "STEP",
    "S_PREV", "WORLD_SIZE", "Y_PREV",
]
