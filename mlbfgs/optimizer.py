"""The mL-BFGS optimizer (Niu, Fabian, Lee, Soltanolkotabi, Avestimehr; TMLR 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, TypeVar, overload

import torch
from torch.optim import Optimizer

from . import checkpoint, live_state
from . import functional as F
from . import state_keys as K
from .blocks import BlockSpec, build_blocks, can_have_gradient, check_supported
from .config import CurvatureConfig, check_group_values, check_repeated_settings
from .curvature import CurvatureHistory, new_block_state
from .curvature.row_state import bind_row_views, new_replicated_state, new_row_buffers
from .distribution import CommunicationBytes, Distributor, resolve_distributor
from .distribution.resolve import refuse_zero_redundancy
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

    Distributed (:mod:`mlbfgs.distribution`): ``fully_shard`` (FSDP2) parameters, or ``process_group``
    (DDP) with whole blocks or rows per rank (``shard``); the mathematics is that of one process
    (:mod:`mlbfgs.curvature`). Costs: :meth:`communication_bytes`, :meth:`curvature_bytes`.

    Not supported (``ValueError`` naming the parameter): complex parameters, sparse gradients,
    FSDP1 flat parameters, and DTensors other than ``fully_shard``'s (tensor parallel, HSDP, replicated).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        momentum: momentum of the update (mu above).
        weight_decay: L2 penalty added to the gradient (it enters the curvature pairs too).
        history_size, update_period, beta, pair_momentum, damping, curvature_bounds, direction_norm,
            kl_clip, history_dtype, check_finite, min_curvature: the curvature settings, shared by all
            groups; each is described, with its default (the authors'), in :class:`CurvatureConfig`.
        blocks: ``"model"``, ``"layer"``, an int N or a list of lists of parameters
            (:func:`mlbfgs.blocks.build_blocks`).
        process_group: shard the curvature over this group's ranks (data parallel: every rank holds the
            same averaged gradient); None for one process, or with ``fully_shard`` (the mesh gives it).
        comm_dtype: dtype of the direction exchange between ranks (e.g. ``torch.bfloat16``);
            None sends the working dtype.
        shard: with a ``process_group``, ``"blocks"`` (default: each rank holds whole blocks) or
            ``"rows"`` (each rank holds its rows of every block; ``history_dtype`` float32/float64); ranks
            must agree. Not read without a process group or with ``fully_shard`` parameters (always rows).
            A checkpoint loads only in the mode it was saved in (:mod:`mlbfgs.checkpoint`).

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
        check_group_values(lr, momentum, weight_decay)
        refuse_zero_redundancy()
        self.config = CurvatureConfig(
            history_size=history_size, update_period=update_period, beta=beta, pair_momentum=pair_momentum,
            damping=damping, curvature_bounds=curvature_bounds, direction_norm=direction_norm, kl_clip=kl_clip,
            min_curvature=min_curvature, history_dtype=history_dtype, check_finite=check_finite,
        )
        self._block_spec = blocks
        self.blocks: list[list[torch.Tensor]] = []
        self.block_sizes: list[int] = []  # elements per block, in block order (whole parameters, also sharded)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        all_params = self._trainable_params()
        if not all_params and any(g["params"] for g in self.param_groups):
            raise ValueError("params: no parameter that can have a gradient: integer and bool parameters are skipped "
                             "(they never get one); give MLBFGS floating-point parameters")
        for i, p in enumerate(all_params):
            check_supported(p, i, row_sharded=True)
        self._set_blocks(build_blocks(all_params, blocks))
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

    def _trainable_params(self) -> list[torch.Tensor]:
        """The groups' parameters that can have a gradient (integer ones, e.g. a quantised weight, never do)."""
        return [p for g in self.param_groups for p in g["params"] if can_have_gradient(p)]

    def _set_blocks(self, blocks: list[list[torch.Tensor]]) -> None:
        # kept with the blocks, so that reading the sizes costs nothing (construction stays linear)
        self.blocks = blocks
        self.block_sizes = [sum(p.numel() for p in b) for b in blocks]

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
                    if can_have_gradient(p) and self.state[p].get(K.MOMENTUM_BUFFER) is None:
                        self.state[p][K.MOMENTUM_BUFFER] = torch.zeros_like(p, memory_format=torch.preserve_format)

    # ------------------------------------------------------------------ structure
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
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        check_group_values(group["lr"], group["momentum"], group["weight_decay"])
        check_repeated_settings(group, self.config)
        if not hasattr(self, "distributor"):  # still in __init__: blocks are built from all groups at once
            return
        self._follow_groups()  # the new group's parameters get blocks, as parameters appended by hand do

    def _add_blocks(self, new: list[torch.Tensor], indices: list[int]) -> None:
        """Blocks for parameters the optimizer did not have (a group added, or parameters appended to a
        group by hand; ``indices``: their places among all the groups' parameters, for errors), by the
        rule of the class docstring; existing blocks keep their state."""
        for i, p in zip(indices, new, strict=True):
            check_supported(p, i, row_sharded=True)
        self.distributor.check_new_params(new, indices[0])
        spec = self._block_spec if self._block_spec in ("model", "layer") else "model"
        new_blocks = build_blocks(new, spec)
        new_sizes = [sum(p.numel() for p in block) for block in new_blocks]
        self.owners += self.distributor.assign(new_sizes, self.block_sizes, self.owners)
        self._set_blocks(self.blocks + new_blocks)
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
        F.gather_gradient_(buf, self.param_groups)
        phase = self._begin_step(buf)
        if phase is None:  # non-finite gradient: skipped and counted
            return loss
        F.update_averages_(buf, phase, self.config.beta)
        if phase.form_pair:
            self._form_pairs(buf, phase)
            phase = self._with_pairs(phase)
        buf.curvature.precondition_(phase, self.config)
        buf.curvature.assemble_(buf.flat, phase, self.config, self.last_pairs)  # no setattr here: traced
        F.momentum_update_(buf, self.param_groups)
        return loss

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _init_group(self) -> bool:
        """Check gradients and (re)build the step's tensor lists (``self._buffers``) when anything they
        were built on changed: which parameters have gradients, the groups' momentum settings, the
        parameters in the groups (identity, dtype, device) or the state's containers and tensors
        (:mod:`mlbfgs.live_state`). False: no parameter has a gradient."""
        any_grad = False
        for i, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                g = p.grad
                if g is not None:
                    any_grad = True
                    if g.is_sparse or g.layout != torch.strided:
                        raise ValueError(
                            f"params: parameter {j} of group {i} (shape {tuple(p.shape)}) has a sparse gradient; "
                            "MLBFGS needs dense gradients (e.g. nn.Embedding(sparse=False))"
                        )
        if not any_grad:
            return False
        key = self._signature()
        if self._buffers is None or self._buffers.signature != key:
            self._follow_live()
            key = self._signature()  # the state the buffers are built on
            self._buffers = StepBuffers(self, key)
        return True

    def _follow_live(self) -> None:
        """Catch up with what changed since the last step (also before saving or loading a state)."""
        self._follow_groups()  # parameters appended to a group by hand, or swapped
        live_state.follow_parameters(self)  # a cast or move of the model, replaced state
        self._create_state()  # entries missing after a load or a reset, or a momentum switched on

    def _signature(self) -> tuple[Any, ...]:
        """What the step's buffers depend on; compared every step (Python only: no tensor work, no sync)."""
        signature: list[Any] = []
        for group in self.param_groups:
            params = group["params"]
            signature.extend((id(p), p.grad is not None, p.dtype, p.device) for p in params)
            signature.append(group["momentum"] != 0)
        if self.row_sharded:  # FSDP2 may swap a parameter's local tensor (e.g. at its lazy init)
            signature.extend(self.distributor.local(p).data_ptr() for g in self.param_groups for p in g["params"])
        signature.append(id(self.state))
        signature.extend(live_state.state_identity(self.state, self._trainable_params()))
        return tuple(signature)

    def _follow_groups(self) -> None:
        """Give blocks to parameters appended to a group by hand; refuse tensors swapped for the ones the
        blocks hold (a block's averages and ring are those of its parameters)."""
        everything = [p for g in self.param_groups for p in g["params"]]
        ids = {id(p) for p in everything}
        known = {id(p) for block in self.blocks for p in block}
        new_at = [i for i, p in enumerate(everything) if id(p) not in known and can_have_gradient(p)]
        gone = [p for block in self.blocks for p in block if id(p) not in ids]
        if gone:
            shapes = ", ".join(str(tuple(p.shape)) for p in gone[:4]) + (", ..." if len(gone) > 4 else "")
            raise ValueError(
                f"param_groups changed since construction: {len(gone)} parameter(s) MLBFGS was built with "
                f"(shapes {shapes}) are in no group any more"
                + (f", and parameter(s) {new_at[:4]} of the groups are new" if new_at else "")
                + ". Each block's averages and ring belong to its parameters, so tensors cannot be swapped under "
                "them (DeepSpeed ZeRO's flat copies do this): build MLBFGS on the tensors it will step, and add "
                "parameters with add_param_group (or by appending them to a group)"
            )
        if new_at:
            self._add_blocks([everything[i] for i in new_at], new_at)

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _begin_step(self, buf: StepBuffers) -> StepPhase | None:  # a NamedTuple: torch.compile can hold it
        """The curvature's start of step (row sharding: the step's all-reduce, which also carries the
        non-finite check, before the averages move); skip and count a non-finite step, else advance the
        counters and say what this step does."""
        gs = self._global_state()
        self.last_pairs = []
        live = buf.live_blocks
        with_pairs = buf.blocks_with_pairs(live)  # the step's reduction does not change the rings
        if not buf.curvature.begin_step(buf.flat, live, with_pairs, self.config.check_finite):
            gs[K.SKIPPED_STEPS] += 1
            return None
        gs[K.STEP] += 1
        t, period = gs[K.STEP], self.config.update_period
        return StepPhase(
            first=t == 1,
            form_pair=t > 1 and (t - 1) % period == 0,
            active=t > period,
            blocks=live,
            with_pairs=with_pairs,
        )

    @torch._dynamo.disable  # type: ignore[untyped-decorator]
    def _with_pairs(self, phase: StepPhase) -> StepPhase:
        with_pairs = self._buffers.blocks_with_pairs(phase.blocks)  # type: ignore[union-attr]
        return phase._replace(with_pairs=with_pairs)

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
