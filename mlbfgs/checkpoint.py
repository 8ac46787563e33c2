"""Saving and loading MLBFGS state, attached to the optimizer through torch's state-dict hooks.

``state_dict()`` is torch's, keyed by parameters only (so the ``torch.distributed.checkpoint`` helpers
accept it): each block's curvature under its first parameter, the counters and the settings under
the first block's first parameter (:mod:`mlbfgs.state_keys`). The settings are saved as numbers
(:func:`settings_of`) so that ``flatten_optimizer_state_dict=True`` accepts them.

Loading checks that the curvature settings, blocks and world size match (``ValueError`` naming the
first difference), sets the curvature aside while torch loads the rest (torch casts floating state
to the parameter's dtype; the averages keep the working dtype and the ring the history dtype), then
places it, copying row-sharded rows into the step's buffers.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any

import torch

from . import state_keys as K
from .config import DIRECTION_NORMS, HISTORY_DTYPES, CurvatureConfig
from .curvature.row_state import bind_row_views, load_row_buffers, new_row_buffers
from .live_state import cast_block_state

if TYPE_CHECKING:
    from .optimizer import MLBFGS

_CHOICES: dict[str, tuple[Any, ...]] = {"direction_norm": DIRECTION_NORMS, "history_dtype": HISTORY_DTYPES}
_CURVATURE_ENTRIES = (K.BLOCK, K.GLOBAL, K.ROWS)


def attach(opt: MLBFGS) -> None:
    """Register the hooks of this module on ``opt``."""
    # torch types the hooks for any Optimizer; these read MLBFGS's structure
    opt.register_state_dict_pre_hook(_before_state_dict)  # type: ignore[arg-type]
    opt.register_load_state_dict_pre_hook(_before_load)  # type: ignore[arg-type]
    opt.register_load_state_dict_post_hook(_after_load)  # type: ignore[arg-type]


def settings_of(config: CurvatureConfig) -> dict[str, float]:
    """The curvature settings as numbers: a choice is its index among the allowed values (None: -1),
    a pair two entries."""
    out: dict[str, float] = {}
    for f in fields(CurvatureConfig):
        v = getattr(config, f.name)
        if f.name == "curvature_bounds":
            out["curvature_bounds_low"], out["curvature_bounds_high"] = float(v[0]), float(v[1])
        elif f.name in _CHOICES:
            out[f.name] = float(_CHOICES[f.name].index(v)) if v is not None else -1.0
        else:
            out[f.name] = float(v)
    return out


def _decode(name: str, value: float) -> Any:
    """A saved setting back to its value, for messages."""
    if name in _CHOICES:
        return None if value < 0 else _CHOICES[name][int(value)]
    if name in ("history_size", "update_period"):
        return int(value)
    if name == "check_finite":
        return bool(value)
    return value


def _before_state_dict(opt: MLBFGS) -> None:
    # what the next step would see: blocks for parameters appended by hand, a fresh record after a reset,
    # the settings even before the first step
    opt._follow_live()


def _before_load(opt: MLBFGS, state_dict: dict[str, Any]) -> dict[str, Any]:
    """Check the saved state against ``opt`` and set its curvature aside (placed by :func:`_after_load`)."""
    opt._follow_groups()  # parameters appended to a group by hand have their blocks, as when it was saved
    saved_state = state_dict["state"]
    ids = [i for g in state_dict["param_groups"] for i in g["params"]]
    old = [k for k in saved_state if k not in set(ids)]
    if old:
        raise ValueError(
            f"load_state_dict: state keys {old[:3]} come from mlbfgs < 0.2, which kept block state under "
            "its own keys; retrain or convert the checkpoint (block b now lives under its first parameter)"
        )
    # The record lives under the first parameter of the first *block*, which need not be the first
    # parameter of the groups (a partition may list the last layer first).
    params = [p for g in opt.param_groups for p in g["params"]]
    first = next((i for i, p in zip(ids, params) if p is opt._first_param), None)
    saved_global = saved_state.get(first, {}).get(K.GLOBAL) if first is not None else None
    if saved_global is None:
        raise ValueError(
            "load_state_dict: no MLBFGS record (counters, settings) under the first parameter of the first "
            "block; the state was not saved by MLBFGS, it was saved with other blocks, or that parameter was "
            "left out (e.g. frozen when loading through the distributed-checkpoint helpers, which skip "
            "parameters that do not require gradients)"
        )
    _check_saved(opt, saved_global)
    saved_rows = any(K.ROWS in entry for entry in saved_state.values())
    if saved_rows != opt.row_sharded:
        kinds = {True: "row-sharded curvature (fully_shard, or shard='rows')",
                 False: "whole blocks (a single process, or shard='blocks')"}
        raise ValueError(
            f"load_state_dict: the state was saved with {kinds[saved_rows]} but this optimizer runs with "
            f"{kinds[opt.row_sharded]}; load it into the same kind of model"
        )
    plain, curvature = {}, {}
    for k, entry in saved_state.items():
        plain[k] = {n: v for n, v in entry.items() if n not in _CURVATURE_ENTRIES}
        curvature[k] = {n: v for n, v in entry.items() if n in _CURVATURE_ENTRIES}
    by_index = dict(zip(ids, params))
    opt._loading = {by_index[k]: entry for k, entry in curvature.items() if entry}
    return {**state_dict, "state": plain}


def _after_load(opt: MLBFGS) -> None:
    """Place the curvature set aside by :func:`_before_load`; row-sharded rows go into the step's buffers."""
    curvature, opt._loading = opt._loading, {}
    work, hist = opt._work_dtype(), opt._history_dtype()
    for p, entry in curvature.items():
        if K.GLOBAL in entry:
            saved = entry[K.GLOBAL]
            opt.state[p][K.GLOBAL] = {n: (int(v) if n in (K.STEP, K.SKIPPED_STEPS, K.WORLD_SIZE) else v)
                                      for n, v in saved.items()}
            opt.state[p][K.GLOBAL][K.SETTINGS] = settings_of(opt.config)
            opt.state[p][K.GLOBAL][K.BLOCK_SIZES] = opt._block_sizes_tensor()
            opt.state[p][K.GLOBAL][K.WORLD_SIZE] = opt.distributor.world_size  # row-sharded: may differ
        if K.BLOCK in entry:
            opt.state[p][K.BLOCK] = cast_block_state(entry[K.BLOCK], p.device, work, hist)
    if opt.row_sharded:
        saved_rows = {p: entry[K.ROWS] for p, entry in curvature.items() if K.ROWS in entry}
        rows_of: Any = opt.distributor
        for b in opt.owned_blocks:
            if b not in opt._row_buffers:
                opt._row_buffers[b] = new_row_buffers(opt.blocks[b], rows_of, opt.config, work, hist)
            load_row_buffers(b, opt.blocks[b], opt._row_buffers[b], saved_rows, rows_of, opt.config)
            bind_row_views(opt.blocks[b], opt._row_buffers[b], rows_of, opt.config, opt.state)
    opt._buffers = None  # views must point at the loaded tensors
    missing = [b for b in opt.owned_blocks if K.BLOCK not in opt.state.get(opt.blocks[b][0], {})]
    if missing:
        raise ValueError(
            f"load_state_dict: the curvature state of block(s) {missing} is missing (their first parameter's "
            "entry was left out, e.g. frozen when loading through the distributed-checkpoint helpers, which "
            "skip parameters that do not require gradients); unfreeze before loading"
        )


def _check_saved(opt: MLBFGS, saved: dict[str, Any]) -> None:
    if saved[K.WORLD_SIZE] != opt.distributor.world_size and not opt.row_sharded:
        raise ValueError(
            f"load_state_dict: the state was saved with world size {saved[K.WORLD_SIZE]} but this "
            f"optimizer runs with {opt.distributor.world_size}; each rank holds only its own blocks, "
            "so load with the same world size"
        )
    saved_sizes = saved[K.BLOCK_SIZES]
    saved_sizes = saved_sizes.tolist() if isinstance(saved_sizes, torch.Tensor) else list(saved_sizes)
    if saved_sizes != opt.block_sizes:
        raise ValueError(
            f"load_state_dict: block sizes differ (saved {saved_sizes}, now {opt.block_sizes}); "
            "use the same model and blocks setting"
        )
    now = settings_of(opt.config)
    saved_settings = dict(saved.get(K.SETTINGS, {}))
    if isinstance(saved_settings.get("curvature_bounds"), (list, tuple)):  # settings as strings: convert
        low, high = saved_settings.pop("curvature_bounds")
        saved_settings["curvature_bounds_low"], saved_settings["curvature_bounds_high"] = low, high
        for name, choices in _CHOICES.items():
            value = saved_settings.get(name)
            names = [str(c).removeprefix("torch.") for c in choices]
            saved_settings[name] = -1.0 if value is None else float(names.index(value))
    for name, value in saved_settings.items():
        if name in now and now[name] != float(value):
            raise ValueError(
                f"load_state_dict: the state was saved with {name}={_decode(name, value)!r}, but this optimizer "
                f"has {name}={_decode(name, now[name])!r}; build MLBFGS with the saved curvature settings"
            )
