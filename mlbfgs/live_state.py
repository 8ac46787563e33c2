"""``optimizer.state`` as the one source of truth between steps, whatever replaced it.

Frameworks handle an optimizer's state without asking it: RL trainers offload it to the host between
rollouts and bring it back (new tensors), Lightning rebuilds each entry with ``apply_to_collection``
(new containers), helpers reassign ``t.data``, resets clear it, and ``model.double()`` or
``model.cuda()`` change the parameters under it. ``torch.optim.SGD`` reads its state afresh every
step, so all of this just works for it.

MLBFGS keeps views into its state for the step (:class:`mlbfgs.step_buffers.StepBuffers`), so that a
step allocates nothing. :func:`state_identity` is what those views depend on (containers, tensors and
their storage); the step compares it with the one its buffers were built on, a Python-level check per
step, and when anything changed it calls :func:`follow_parameters` and rebuilds them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch

from . import state_keys as K
from .curvature.row_state import bind_row_views, load_row_buffers, new_row_buffers

if TYPE_CHECKING:
    from .optimizer import MLBFGS


def state_identity(state: Mapping[torch.Tensor, dict[str, Any]], params: Iterable[torch.Tensor]) -> list[Any]:
    """The containers and tensors of ``state[p]`` for ``params``, with the storage of each tensor: a
    replaced dict or tensor changes an ``id``, a ``t.data = ...`` the storage pointer. The step's views
    keep the old objects alive, so a new one cannot reuse their ``id``."""
    out: list[Any] = []
    for p in params:
        entry = state.get(p)
        out.append(None if entry is None else id(entry))
        if entry is None:
            continue
        for value in entry.values():
            if isinstance(value, dict):
                out.append(id(value))
                for inner in value.values():
                    if isinstance(inner, torch.Tensor):
                        _identify(inner, out)
            elif isinstance(value, torch.Tensor):
                _identify(value, out)
    return out


def _identify(t: torch.Tensor, out: list[Any]) -> None:
    out.append(id(t))
    # a DTensor's storage is its local tensor's (replacing the DTensor changes its id); the type's name
    # is read, not ``t.data``, which would make a tensor object per entry and step
    if type(t).__name__ != "DTensor":
        out.append(t.data_ptr())


def follow_parameters(opt: MLBFGS) -> None:
    """Bring the state to its parameters' device and dtype after a cast or a move (``model.double()``,
    ``.cuda()``), as ``load_state_dict`` casts it: the curvature to the working and history dtypes, the
    momentum buffers to the parameter's dtype. Row-sharded, the rank's rows are copied from the
    DTensors in ``state`` (whatever replaced them) into new row buffers, and the views are rebound."""
    work, hist = opt._work_dtype(), opt._history_dtype()
    local = opt.distributor.local
    for b in opt.owned_blocks:
        entry = opt.state.get(opt.blocks[b][0])
        if entry is None or K.BLOCK not in entry:
            continue  # cleared: created afresh by the step
        device = local(opt.blocks[b][0]).device
        if any(isinstance(v, torch.Tensor) and (v.device != device or v.dtype != expected_dtype(name, work, hist))
               for name, v in entry[K.BLOCK].items()):
            entry[K.BLOCK] = cast_block_state(entry[K.BLOCK], device, work, hist)
    for group in opt.param_groups:
        for p in group["params"]:
            buf = opt.state[p].get(K.MOMENTUM_BUFFER) if p in opt.state else None
            if isinstance(buf, torch.Tensor) and (buf.dtype != p.dtype or buf.device != p.device):
                opt.state[p][K.MOMENTUM_BUFFER] = buf.to(device=p.device, dtype=p.dtype)
    if opt.row_sharded:
        _reload_rows(opt, work, hist)


def expected_dtype(name: str, work: torch.dtype, hist: torch.dtype) -> torch.dtype:
    """The dtype an entry of a block's curvature state is kept in."""
    return {K.HISTORY: hist, K.GRAM: torch.float64}.get(name, work)


def cast_block_state(st: dict[str, Any], device: torch.device, work: torch.dtype,
                     hist: torch.dtype) -> dict[str, Any]:
    """A copy of a block's curvature state on ``device``, each tensor in its :func:`expected_dtype`."""
    return {name: v.to(device=device, dtype=expected_dtype(name, work, hist), copy=True)
            if isinstance(v, torch.Tensor) else v for name, v in st.items()}


def _reload_rows(opt: MLBFGS, work: torch.dtype, hist: torch.dtype) -> None:
    rows_of: Any = opt.distributor
    for b in opt.owned_blocks:
        block = opt.blocks[b]
        saved = {p: opt.state[p][K.ROWS] for p in block if p in opt.state and K.ROWS in opt.state[p]}
        if len(saved) < len(block) or K.BLOCK not in opt.state.get(block[0], {}):
            # a partial or cleared entry: the block starts afresh, as after a reset
            opt.state[block[0]].pop(K.BLOCK, None)
            opt._row_buffers.pop(b, None)
            continue
        rows = new_row_buffers(block, rows_of, opt.config, work, hist)
        load_row_buffers(b, block, rows, saved, rows_of, opt.config)
        opt._row_buffers[b] = rows
        bind_row_views(block, rows, rows_of, opt.config, opt.state)
