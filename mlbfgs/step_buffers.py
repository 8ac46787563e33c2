"""The step's preallocated buffers and tensor lists, built once per signature (which parameters have
gradients, which groups use momentum), so that a step allocates nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from . import state_keys as K
from .curvature import Curvature, RowCurvature, WholeBlockCurvature
from .layout import param_views

if TYPE_CHECKING:
    from .optimizer import MLBFGS


class StepPhase(NamedTuple):
    """What this step does, decided from the counters before any math (so that ``torch.compile``
    sees a handful of booleans, never the counters themselves)."""

    first: bool  # t == 1: the averages and anchors start at this step's values
    form_pair: bool  # t - 1 is a positive multiple of T
    active: bool  # t > T: the first pair period has passed, so the direction is rescaled
    blocks: tuple[int, ...]  # own blocks with at least one gradient this step
    with_pairs: tuple[int, ...]  # of those, the ones whose ring holds a pair (after this step's pair)


class StepBuffers:
    """Preallocated flat buffer, its views, the curvature of the blocks (:mod:`mlbfgs.curvature`) and
    the tensor lists of one signature; rebuilt when the signature or the state changes."""

    def __init__(self, opt: MLBFGS, signature: tuple[bool | int, ...]) -> None:
        layout = opt.layout
        work = opt._work_dtype()
        distributor = opt.distributor
        self.local = local = distributor.local  # the rank's rows under row sharding, the tensor itself otherwise
        device = local(opt.blocks[0][0]).device
        self.signature = signature
        self.flat = torch.zeros(layout.numel, dtype=work, device=device)
        self.momentum = [torch.zeros((), dtype=work, device=device) for _ in opt.param_groups]
        self.lr = [torch.zeros((), dtype=work, device=device) for _ in opt.param_groups]
        self._rows = distributor.holds_rows
        view_of: dict[int, torch.Tensor] = {}
        for b, block in enumerate(opt.blocks):
            views = param_views(layout.block_view(self.flat, b), 0, [local(p) for p in block])
            view_of.update({id(p): v for p, v in zip(block, views)})
        has_grad = {id(p) for g in opt.param_groups for p in g["params"] if p.grad is not None}
        self._with_grad = [p for g in opt.param_groups for p in g["params"] if id(p) in has_grad]
        self.grad_views = [view_of[id(p)] for p in self._with_grad]
        self.zero_views = [view_of[id(p)] for b in opt.blocks for p in b if id(p) not in has_grad]
        self.live_blocks = tuple(b for b in opt.owned_blocks if any(id(p) in has_grad for p in opt.blocks[b]))
        self.block_state = {b: opt.block_state(b) for b in opt.owned_blocks}
        # the flat vectors (averages, anchors): in the block state, or the row buffers when row-sharded
        self.vectors = {b: opt._row_buffers.get(b, self.block_state[b]) for b in opt.owned_blocks}
        self.block_params = {b: [local(p) for p in opt.blocks[b]] for b in opt.owned_blocks}
        self.block_grads = {b: layout.block_view(self.flat, b) for b in opt.owned_blocks}
        self.block_ema_views = {
            b: param_views(self.vectors[b][K.PARAM_AVG], 0, self.block_params[b]) for b in opt.owned_blocks
        }
        self.curvature: Curvature
        if distributor.holds_rows:
            self.curvature = RowCurvature(self.block_state, self.vectors, self.flat, self.block_grads, layout,
                                          distributor)
        else:
            self.curvature = WholeBlockCurvature(self.block_state, self.flat, self.block_grads, layout, distributor)
        # the lists phase 2 works on (the blocks with gradients), built once per signature, not per step
        live = self.live_blocks
        self.live_ema = [v for b in live for v in self.block_ema_views[b]]
        self.live_params = [p for b in live for p in self.block_params[b]]
        self.live_grads = [self.block_grads[b] for b in live]
        self.live_grad_avg = [self.vectors[b][K.GRAD_AVG] for b in live]
        self.live_param_avg = [self.vectors[b][K.PARAM_AVG] for b in live]
        self.live_param_anchor = [self.vectors[b][K.PARAM_ANCHOR] for b in live]
        self.live_grad_anchor = [self.vectors[b][K.GRAD_ANCHOR] for b in live]
        self.live_same_dtype = all(v.dtype == p.dtype for v, p in zip(self.live_ema, self.live_params))
        self.group_params = [[local(p) for p in g["params"] if id(p) in has_grad] for g in opt.param_groups]
        self.group_views = [
            [view_of[id(p)] for p in g["params"] if id(p) in has_grad] for g in opt.param_groups
        ]
        # phase 7's lists: per group, the rows this rank updates (its own, or under DDP with shard="rows"
        # every rank's rows of the full parameters, whose direction comes from the all-gather)
        pieces = distributor.update_views(opt.blocks, view_of)
        self.update_params, self.update_views, self.update_momenta = [], [], []
        rows_of = getattr(distributor, "rows_of", None)
        part = rows_of if distributor.updates_all_rows and rows_of is not None else (lambda t, k: local(t))
        for g in opt.param_groups:
            live_rows = [(p, k, d) for p in g["params"] if id(p) in has_grad for k, d in pieces[id(p)]]
            self.update_params.append([part(p, k) for p, k, _ in live_rows])
            self.update_views.append([d for _, _, d in live_rows])
            self.update_momenta.append(
                [part(opt.state[p][K.MOMENTUM_BUFFER], k) for p, k, _ in live_rows] if g["momentum"] != 0 else []
            )

    def grads(self) -> list[torch.Tensor]:
        if self._rows:  # the rank's rows of each gradient (a view, made anew: FSDP2 replaces the gradients)
            return [self.local(p.grad) for p in self._with_grad]
        return [p.grad for p in self._with_grad]

    def blocks_with_pairs(self, blocks: tuple[int, ...]) -> tuple[int, ...]:
        """Those of ``blocks`` whose ring holds at least one pair."""
        return tuple(b for b in blocks if self.block_state[b][K.NUM_PAIRS] > 0)
