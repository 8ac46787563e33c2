"""The mL-BFGS optimizer (Niu, Fabian, Lee, Soltanolkotabi, Avestimehr; TMLR 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar, overload

import torch
from torch.optim import Optimizer

from . import checkpoint
from . import state_keys as K
from .blocks import BlockSpec, build_blocks, check_supported
from .config import CurvatureConfig
from .curvature import CurvatureHistory, new_block_state
from .curvature.row_state import bind_row_views, new_replicated_state, new_row_buffers
from .distribution import CommunicationBytes, Distributor, resolve_distributor
from .pairs import PairRecord, accept_pair, difference_pair_
from .step_buffers import StepBuffers, StepPhase

_Loss = TypeVar("_Loss")  # what a step's closure returns (usually the loss tensor), returned by step


class MLBFGS(Optimizer):
    r"""Momentum-based L-BFGS with block-diagonal curvature.

    For every block ``b`` (a group of parameters) and step ``t`` with gradient
    ``g_t = grad + weight_decay * theta_t``, the phases of :meth:`step`, in order:

    1. *gather gradient*: ``g_t`` of every parameter into one flat buffer.
    2. *update averages*:

       .. math::
           P \leftarrow \beta P + (1-\beta)\theta_t, \qquad G \leftarrow \beta G + (1-\beta) g_t

       (``P = \theta_1, G = g_1`` at ``t = 1``).
    3. *form pairs*: every ``update_period`` (T) steps a pair ``s = P - P_0``, ``y = G - G_0`` (then
       ``P_0, G_0 \leftarrow P, G``), optionally smoothed with the previous pair (``pair_momentum``
       xi), damped so that ``s.\hat y / s.s \in [\sigma_L, \sigma_H]`` and pushed into a ring of
       ``history_size`` (M) pairs (:mod:`mlbfgs.damping`; a pair with ``s.\hat y <= min_curvature``
       or a non-finite product is rejected and counted).
    4. *precondition*: ``d = H g_t`` with the L-BFGS inverse-Hessian estimate of the ring
       (``H_0 = \gamma I``, ``\gamma = s.\hat y / \hat y.\hat y`` of the newest pair; ``d = g_t``
       before the first pair), in compact form (:mod:`mlbfgs.compact`).
    5. *exchange*: with a process group every rank computes its own blocks (``shard="blocks"``) or
       its rows of every block (``shard="rows"``), and one all-gather assembles ``d``
       (:mod:`mlbfgs.distribution`).
    6. *rescale* (once the first pair period has passed, ``t > T``): ``"block"`` first scales each
       block's ``d_b`` to ``\lVert g_b \rVert`` (in phase 4, per block); ``"global"`` and ``"block"`` divide by
       ``\lVert d \rVert`` over all blocks (computed as ``a \lVert d/a \rVert`` with ``a = \max_i |d_i|``,
       so it neither overflows nor underflows), ``"kl"`` multiplies by ``\min(1, \sqrt{\kappa / g.d})``.
    7. *momentum update*: SGD with momentum on ``d``: ``buf \leftarrow \mu\, buf + d``,
       ``\theta \leftarrow \theta - lr\, buf``.

    Source: Niu et al., "mL-BFGS", TMLR 2023, Alg. 1 and Sec. 3; defaults from the authors'
    run-SLIM.sh (repository yuehniu/mL-BFGS), see :class:`mlbfgs.CurvatureConfig`.

    Per parameter group: ``lr`` (a float, or a 0-dim/1-element tensor), ``momentum``,
    ``weight_decay``; they may change between steps (schedulers, fine-tuning recipes). Curvature
    settings (:class:`CurvatureConfig`) are shared by all groups.

    Parameters without gradients: a parameter whose ``.grad`` is None is untouched by that step, as
    with ``torch.optim.SGD`` (no decay, no momentum, no curvature move). In a block where some
    parameters have gradients, the others count as zero gradient in the averages; a block where none
    has one skips the step entirely (its averages stay, and a pair due then waits for the next
    period). A step where no parameter has a gradient does nothing and does not count.

    Groups added later (``add_param_group``, e.g. unfreezing a backbone): with ``blocks="model"`` or
    ``"layer"`` the new group's parameters get blocks by the same rule, on their own (``"model"``:
    the new group is one new block); with an int or an explicit list (which describe the parameters
    given at construction) each new group is one block. Existing blocks keep their state and owners.

    State: keyed by parameters only, so the ``torch.distributed.checkpoint.state_dict`` helpers accept
    it; ``load_state_dict`` checks that the curvature settings and blocks match (``ValueError`` naming
    the setting). Layout and checks: :mod:`mlbfgs.checkpoint`.

    Distributed (:mod:`mlbfgs.distribution`): with ``fully_shard`` (FSDP2) parameters each rank keeps
    its rows of every block and a step costs one small all-reduce per block (two when a pair forms);
    with ``process_group`` (DDP) each rank holds whole blocks (``shard="blocks"``, one all-gather of
    the directions per step) or its rows of every block (``shard="rows"``, the FSDP2 mathematics, then
    one all-gather of the rows' directions). The mathematics is that of one process in every mode
    (:mod:`mlbfgs.curvature`). Bytes per collective: :meth:`communication_bytes`; per-rank state:
    :meth:`curvature_bytes`.

    Not supported (``ValueError`` naming the parameter): complex parameters, sparse gradients,
    FSDP1 flat parameters, and DTensors other than ``fully_shard``'s (tensor parallel, HSDP, replicated).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: momentum of the update (mu above).
        weight_decay: L2 penalty added to the gradient (it enters the curvature pairs too).
        history_size: M, pairs kept per block.
        update_period: T, steps between pairs.
        beta: EMA factor of parameters and gradients.
        pair_momentum: xi, second smoothing of consecutive pairs (0 disables).
        damping: tau0 in [0, 1): every damped ``y_hat`` mixes in at least this share of ``s``.
        curvature_bounds: (sigma_L, sigma_H) for ``s.y_hat / s.s``.
        blocks: ``"model"``, ``"layer"``, an int N or a list of lists of parameters
            (:func:`mlbfgs.blocks.build_blocks`).
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
        process_group: shard the curvature over the ranks of this group (data-parallel training where
            every rank holds the same averaged gradient), as ``shard`` says; None for a single process.
            None with ``fully_shard`` parameters (their mesh gives the group).
        comm_dtype: dtype of the direction exchange between ranks (e.g. ``torch.bfloat16``);
            None sends the working dtype.
        min_curvature: a damped pair with ``s.y_hat`` at or below this is rejected.
        shard: with a ``process_group``, ``"blocks"`` (default: each rank holds whole blocks,
            :mod:`mlbfgs.distribution.ddp_blocks`) or ``"rows"`` (each rank holds its rows of every block,
            :mod:`mlbfgs.distribution.ddp_rows`; ``history_dtype`` float32/float64). Ranks must agree (checked
            at construction). Without a process group there is nothing to shard and it changes nothing;
            with ``fully_shard`` parameters the curvature is always row-sharded and it is not read.
            Checkpoints: a state saved in one mode loads only in the same mode (``ValueError``); rows
            saved through ``torch.distributed.checkpoint`` load on any number of ranks (resharded),
            whole blocks on the same number only.

    Raises:
        ValueError: a setting out of range (named), an empty parameter list, an unsupported tensor
            kind, a curvature setting given per group, or ``shard`` not ``"blocks"``/``"rows"``.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float | torch.Tensor,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        history_size: int = CurvatureConfig.history_size,
        update_period: int = CurvatureConfig.update_period,
        beta: float = CurvatureConfig.beta,
        pair_momentum: float = CurvatureConfig.pair_momentum,
        damping: float = CurvatureConfig.damping,
        curvature_bounds: tuple[float, float] = CurvatureConfig.curvature_bounds,
        blocks: BlockSpec = "model",
        direction_norm: str = CurvatureConfig.direction_norm,
        kl_clip: float = CurvatureConfig.kl_clip,
        history_dtype: torch.dtype | None = CurvatureConfig.history_dtype,
        check_finite: bool = CurvatureConfig.check_finite,
        process_group: Any = None,
        comm_dtype: torch.dtype | None = None,
        min_curvature: float = CurvatureConfig.min_curvature,
        shard: str = "blocks",
    ) -> None:
        _check_group_values(lr, momentum, weight_decay)
        self.config = CurvatureConfig(
            history_size=history_size, update_period=update_period, beta=beta, pair_momentum=pair_momentum,
            damping=damping, curvature_bounds=curvature_bounds, direction_norm=direction_norm, kl_clip=kl_clip,
            min_curvature=min_curvature, history_dtype=history_dtype, check_finite=check_finite,
        )
        self._block_spec = blocks
        self.blocks: list[list[torch.Tensor]] = []
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        all_params = [p for g in self.param_groups for p in g["params"]]
        for i, p in enumerate(all_params):
            check_supported(p, i, row_sharded=True)
        self.blocks = build_blocks(all_params, blocks)
        self.distributor: Distributor = resolve_distributor(all_params, self.block_sizes, process_group, comm_dtype,
                                                            history_dtype, shard)
        if self.distributor.holds_rows and direction_norm == "block":
            raise ValueError("direction_norm: 'block' needs whole blocks on each rank; with row sharding "
                             "(fully_shard, or shard='rows') use one of ['global', 'kl', 'none']")
        self.owners = self.distributor.assign(self.block_sizes)
        self._row_buffers: dict[int, dict[str, torch.Tensor]] = {}
        self._loading: dict[torch.Tensor, dict[str, Any]] = {}  # curvature set aside while loading
        self._relayout()
        self.last_pairs: list[PairRecord] = []
        self._create_state()
        checkpoint.attach(self)

    def _create_state(self) -> None:
        """Create every state entry now (zeros; the first step sets the averages), so that a fresh
        optimizer's ``state_dict`` already has its full structure: the distributed-checkpoint helpers
        then neither run a zero-gradient step to create it nor load into a template that lacks it."""
        self._global_state()
        for b, block in enumerate(self.blocks):
            for p in block:
                self.state[p][K.BLOCK_INDEX] = b
        for b in self.owned_blocks:
            self.block_state(b)
        for group in self.param_groups:
            if group["momentum"] != 0:
                for p in group["params"]:
                    if K.MOMENTUM_BUFFER not in self.state[p]:
                        self.state[p][K.MOMENTUM_BUFFER] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # ------------------------------------------------------------------ structure
    @property
    def block_sizes(self) -> list[int]:
        """Elements per block, in block order (whole parameters, also when they are sharded)."""
        return [sum(p.numel() for p in b) for b in self.blocks]

    @property
    def row_sharded(self) -> bool:
        """True with ``fully_shard`` (FSDP2) parameters, or with a process group and ``shard="rows"``
        (DDP): each rank holds its rows of every block (:mod:`mlbfgs.distribution`)."""
        return self.distributor.holds_rows

    @property
    def owned_blocks(self) -> list[int]:
        """The blocks whose curvature state this rank holds (all of them in a single process)."""
        return [b for b, r in enumerate(self.owners) if r == self.distributor.rank]

    def _relayout(self) -> None:
        self.layout, self.imbalance = self.distributor.layout(self.blocks, self.owners)
        self._buffers: StepBuffers | None = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (see the class docstring for the blocks it gets); it trains from the next step."""
        known = {id(p) for g in self.param_groups for p in g["params"]}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_group_values(group["lr"], group["momentum"], group["weight_decay"])
        curvature = sorted(set(group) & set(K.CURVATURE_SETTINGS))
        if curvature:
            raise ValueError(
                f"param groups: {curvature} are curvature settings shared by all groups; pass them to "
                "MLBFGS(...), not per group"
            )
        if not hasattr(self, "distributor"):  # still in __init__: blocks are built from all groups at once
            return
        new = [p for p in group["params"] if id(p) not in known]
        if not new:
            return
        offset = sum(len(g["params"]) for g in self.param_groups[:-1])
        for i, p in enumerate(new):
            check_supported(p, offset + i, row_sharded=True)
        self.distributor.check_new_params(new, offset)
        spec = self._block_spec if self._block_spec in ("model", "layer") else "model"
        new_blocks = build_blocks(new, spec)
        new_sizes = [sum(p.numel() for p in block) for block in new_blocks]
        self.owners += self.distributor.assign(new_sizes, self.block_sizes, self.owners)
        self.blocks.extend(new_blocks)
        self.distributor.check_same_layout(self.block_sizes)
        if K.GLOBAL in self.state.get(self._first_param, {}):
            self.state[self._first_param][K.GLOBAL][K.BLOCK_SIZES] = self._block_sizes_tensor()
        self._relayout()
        self._create_state()

    # ------------------------------------------------------------------ state
    @property
    def _first_param(self) -> torch.Tensor:
        return self.blocks[0][0]

    def block_state(self, b: int) -> dict[str, Any]:
        """The curvature state of block ``b`` (averages, anchors, ring; keys in
        :mod:`mlbfgs.state_keys`), created on first use. Only the owner rank holds it; row-sharded, the
        replicated part (its rows: :mod:`mlbfgs.curvature.row_state`)."""
        if self.owners[b] != self.distributor.rank:
            raise ValueError(f"block {b} is held by rank {self.owners[b]}, not by rank {self.distributor.rank}")
        block = self.blocks[b]
        entry = self.state[block[0]]
        work, hist = self._work_dtype(), self._history_dtype()
        if self.row_sharded and (K.BLOCK not in entry or b not in self._row_buffers):
            rows_of: Any = self.distributor
            self._row_buffers[b] = new_row_buffers(block, rows_of, self.config, work, hist)
            entry[K.BLOCK] = new_replicated_state(self.config, work, rows_of.local(block[0]).device)
            bind_row_views(block, self._row_buffers[b], rows_of, self.config, self.state)
        elif K.BLOCK not in entry:
            entry[K.BLOCK] = new_block_state(self.block_sizes[b], self.config, block[0].device, work, hist)
        state: dict[str, Any] = entry[K.BLOCK]
        return state

    def _global_state(self) -> dict[str, Any]:
        entry = self.state[self._first_param]
        if K.GLOBAL not in entry:
            entry[K.GLOBAL] = {
                K.STEP: 0,
                K.SKIPPED_STEPS: 0,
                K.WORLD_SIZE: self.distributor.world_size,
                K.BLOCK_SIZES: self._block_sizes_tensor(),
                K.SETTINGS: checkpoint.settings_of(self.config),
            }
        global_state: dict[str, Any] = entry[K.GLOBAL]
        return global_state

    def _block_sizes_tensor(self) -> torch.Tensor:
        return torch.tensor(self.block_sizes, dtype=torch.int64)

    @property
    def stats(self) -> dict[str, int]:
        """Counters of this rank: pairs accepted/rejected (own blocks), skipped steps, steps taken."""
        gs = self._global_state()
        blocks = [self.block_state(b) for b in self.owned_blocks]
        return {
            "pairs_accepted": sum(st[K.PAIRS_ACCEPTED] for st in blocks),
            "pairs_rejected": sum(st[K.PAIRS_REJECTED] for st in blocks),
            "skipped_steps": gs[K.SKIPPED_STEPS],
            "step": gs[K.STEP],
        }

    def curvature_bytes(self) -> int:
        """Bytes of curvature state (EMAs, anchors, ring, compact matrices) held by this rank; row-sharded,
        its rows plus the replicated Gram and compact matrices and gamma of every block."""
        total = 0
        for b in self.owned_blocks:
            tensors = list(self.block_state(b).values()) + list(self._row_buffers.get(b, {}).values())
            total += sum(v.numel() * v.element_size() for v in tensors if isinstance(v, torch.Tensor))
        return total

    def communication_bytes(self) -> CommunicationBytes:
        """Bytes per rank of a step's collectives: ``all_reduce`` (every step; row sharding only),
        ``all_reduce_pair`` (in addition on a pair-forming step) and ``all_gather`` (the gathered
        directions, every step; DDP only). All 0 in a single process. The formulas per mode are in
        :mod:`mlbfgs.distribution.communication`; ``.per_step(pair)`` adds them up."""
        return self.distributor.communication_bytes(self.blocks, self.layout, self.config.history_size,
                                                    self._work_dtype())

    def apply_inverse_hessian_(self, b: int, v: torch.Tensor) -> None:
        """``v <- H_b v`` with the current ring of block ``b`` (flat, ``block_sizes[b]`` elements,
        working dtype); for benchmarks and diagnostics. Not with row-sharded (FSDP2) state: ``ValueError``."""
        if self.row_sharded:
            raise ValueError("apply_inverse_hessian_: a row-sharded block's ring is spread over the ranks; "
                             "the product needs the step's all-reduce")
        history = CurvatureHistory(self.block_state(b))
        if history.num_pairs > 0:
            history.apply_(v)

    def _work_dtype(self) -> torch.dtype:
        return torch.float64 if self._first_param.dtype == torch.float64 else torch.float32

    def _history_dtype(self) -> torch.dtype:
        return self.config.history_dtype or self._work_dtype()

    def __getstate__(self) -> dict[str, Any]:
        # torch.optim.Optimizer keeps only defaults, state and groups; the blocks, layout and settings
        # are needed too. The step buffers are views into scratch and are rebuilt.
        # An LR scheduler wraps ``step`` on the instance; that wrapper is bound to this optimizer, so it
        # is not copied (torch's own optimizers drop it too, and a new scheduler wraps the copy).
        state = {k: v for k, v in self.__dict__.items() if k != "step"}
        return {**state, "_buffers": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)

    # ------------------------------------------------------------------ step
    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], _Loss]) -> _Loss: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], _Loss] | None = None) -> _Loss | None:
        """One mL-BFGS step (the phases of the class docstring); returns ``closure()``'s loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._init_group():  # no parameter has a gradient
            return loss
        buf: StepBuffers = self._buffers  # type: ignore[assignment]  # built by _init_group
        self._gather_gradient(buf)
        phase = self._begin_step(buf)
        if phase is None:  # non-finite gradient: skipped and counted
            return loss
        self._update_averages(buf, phase)
        if phase.form_pair:
            self._form_pairs(buf, phase)
            phase = self._with_pairs(phase)
        buf.curvature.precondition_(phase, self.config)
        self.last_pairs = buf.curvature.assemble_(buf.flat, phase, self.config, self.last_pairs)
        self._momentum_update(buf)
        return loss

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _init_group(self) -> bool:
        """Check gradients, create missing state and (re)build the step's tensor lists
        (``self._buffers``) when the set of parameters with gradients or the groups' momentum settings
        changed. False: no parameter has a gradient."""
        signature: list[bool | int] = []
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                g = p.grad
                if g is not None and (g.is_sparse or g.layout != torch.strided):
                    raise ValueError(
                        f"params: parameter {j} of group {i} (shape {tuple(p.shape)}) has a sparse gradient; "
                        "MLBFGS needs dense gradients (e.g. nn.Embedding(sparse=False))"
                    )
                signature.append(g is not None)
            signature.append(group["momentum"] != 0)
        if self.row_sharded:  # FSDP2 may swap a parameter's local tensor (e.g. at its lazy init)
            signature.extend(self.distributor.local(p).data_ptr() for g in self.param_groups for p in g["params"])
        key = tuple(signature)
        if not any(p.grad is not None for g in self.param_groups for p in g["params"]):
            return False
        if self._buffers is None or self._buffers.signature != key:
            self._create_state()  # entries missing after a load or a momentum switched on
            self._buffers = StepBuffers(self, key)
        return True

    def _gather_gradient(self, buf: StepBuffers) -> None:
        """Phase 1: ``g = grad + weight_decay * theta`` of every parameter into the flat buffer."""
        if buf.zero_views:
            torch._foreach_zero_(buf.zero_views)
        torch._foreach_copy_(buf.grad_views, buf.grads())
        for views, params, group in zip(buf.group_views, buf.group_params, self.param_groups):
            if group["weight_decay"] != 0 and views:
                torch._foreach_add_(views, params, alpha=group["weight_decay"])

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _begin_step(self, buf: StepBuffers) -> StepPhase | None:  # a NamedTuple: torch.compile can hold it
        """The curvature's start of step (row sharding: the step's all-reduce, which also carries the
        non-finite check, before the averages move); skip and count a non-finite step, else advance the
        counters and say what this step does."""
        gs = self._global_state()
        self.last_pairs = []
        live = buf.live_blocks
        if not buf.curvature.begin_step(buf.flat, live, buf.blocks_with_pairs(live), self.config.check_finite):
            gs[K.SKIPPED_STEPS] += 1
            return None
        gs[K.STEP] += 1
        t, period = gs[K.STEP], self.config.update_period
        return StepPhase(
            first=t == 1,
            form_pair=t > 1 and (t - 1) % period == 0,
            active=t > period,
            blocks=live,
            with_pairs=buf.blocks_with_pairs(live),
        )

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _with_pairs(self, phase: StepPhase) -> StepPhase:
        with_pairs = self._buffers.blocks_with_pairs(phase.blocks)  # type: ignore[union-attr]
        return phase._replace(with_pairs=with_pairs)

    def _update_averages(self, buf: StepBuffers, phase: StepPhase) -> None:
        """Phase 2: the parameter and gradient averages of the blocks with gradients."""
        if not phase.blocks:
            return
        if phase.first:
            torch._foreach_copy_(buf.live_ema, buf.live_params)
            torch._foreach_copy_(buf.live_grad_avg, buf.live_grads)
            torch._foreach_copy_(buf.live_param_anchor, buf.live_param_avg)
            torch._foreach_copy_(buf.live_grad_anchor, buf.live_grads)
        else:
            weight = 1.0 - self.config.beta
            if buf.live_same_dtype:
                torch._foreach_lerp_(buf.live_ema, buf.live_params, weight)
            else:  # e.g. bfloat16 parameters, float32 averages: lerp needs one dtype
                torch._foreach_mul_(buf.live_ema, 1.0 - weight)
                torch._foreach_add_(buf.live_ema, buf.live_params, alpha=weight)
            torch._foreach_lerp_(buf.live_grad_avg, buf.live_grads, weight)

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _form_pairs(self, buf: StepBuffers, phase: StepPhase) -> None:
        """Phase 3: a pair per block with gradients, formed in the anchors' storage; its inner products
        (summed over the ranks where rows are sharded) are read back in one host sync, since accepting
        it is a decision. Allocates (once every T steps): the compact matrix is rebuilt from O(m^2)
        temporaries."""
        cfg, curvature = self.config, buf.curvature
        for b in phase.blocks:
            st, v = buf.block_state[b], buf.vectors[b]
            s, y = v[K.PARAM_ANCHOR], v[K.GRAD_ANCHOR]
            difference_pair_(s, y, v[K.PARAM_AVG], v[K.GRAD_AVG], v.get(K.S_PREV), v.get(K.Y_PREV),
                             cfg.pair_momentum, st[K.PAIRS_FORMED])
            st[K.PAIRS_FORMED] += 1
            curvature.pair_products_(b, s, y)
        curvature.reduce_pair_products()
        for b in phase.blocks:
            st, v = buf.block_state[b], buf.vectors[b]
            sy, ss, yy, gg = curvature.pair_dots(b)
            damped = accept_pair(sy, ss, yy, cfg)
            record = PairRecord(b, sy / ss if ss > 0 else math.nan, damped is not None, grad_norm=math.sqrt(gg))
            if damped is not None:
                curvature.push(b, v[K.PARAM_ANCHOR], v[K.GRAD_ANCHOR], damped)
                record = replace(record, damped_mu=damped[1] / ss, gamma=damped[1] / damped[2])
            st[K.PAIRS_ACCEPTED if record.accepted else K.PAIRS_REJECTED] += 1
            self.last_pairs.append(record)
            v[K.PARAM_ANCHOR].copy_(v[K.PARAM_AVG])
            v[K.GRAD_ANCHOR].copy_(v[K.GRAD_AVG])

    def _momentum_update(self, buf: StepBuffers) -> None:
        """Phase 7: ``buf <- mu buf + d``, ``theta <- theta - lr buf`` for parameters with gradients."""
        for group, views, params, momenta, mom, lr_t in zip(
            self.param_groups, buf.update_views, buf.update_params, buf.update_momenta, buf.momentum, buf.lr
        ):
            if not params:
                continue
            lr = group["lr"]
            if momenta:
                mom.fill_(group["momentum"])  # a tensor factor: a Python scalar would allocate per tensor
                torch._foreach_mul_(momenta, mom)
                torch._foreach_add_(momenta, views)
                step = momenta
            else:
                step = views
            if isinstance(lr, torch.Tensor):  # scaled in the flat scratch: lr * step, then subtracted
                lr_t.copy_(lr.reshape(()))
                if step is not views:
                    torch._foreach_copy_(views, step)
                torch._foreach_mul_(views, lr_t)
                torch._foreach_sub_(params, views)
            else:
                torch._foreach_add_(params, step, alpha=-lr)


def _check_group_values(lr: Any, momentum: Any, weight_decay: Any) -> None:
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
