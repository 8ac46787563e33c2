"""The mL-BFGS optimizer (Niu, Fabian, Lee, Soltanolkotabi, Avestimehr; TMLR 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim import Optimizer

from .blocks import BlockSpec, assign_blocks, build_blocks, load_imbalance
from .config import CurvatureConfig
from .curvature_history import CurvatureHistory
from .damping import damped_curvature, damping_factor
from .layout import FlatLayout, param_views

GLOBAL_KEY = "mlbfgs"
_CURVATURE_KEYS = tuple(CurvatureConfig.__dataclass_fields__)


@dataclass(frozen=True)
class PairRecord:
    """A pair formed in the last step: ``mu = s.y / s.s`` before damping, and whether it was kept."""

    block: int
    mu: float
    accepted: bool


def _block_key(b: int) -> str:
    return f"block{b}"


class MLBFGS(Optimizer):
    r"""Momentum-based L-BFGS with block-diagonal curvature.

    For every block ``b`` (a group of parameters) and step ``t`` with gradient
    ``g_t = grad + weight_decay * theta_t``:

    .. math::
        P \leftarrow \beta P + (1-\beta)\theta_t, \qquad G \leftarrow \beta G + (1-\beta) g_t

    every ``update_period`` (T) steps a pair ``s = P - P_0``, ``y = G - G_0`` is formed (then
    ``P_0, G_0 \leftarrow P, G``), optionally smoothed with the previous pair
    (``pair_momentum`` xi), damped so that ``s.\hat y / s.s \in [\sigma_L, \sigma_H]`` and pushed
    into a ring of ``history_size`` (M) pairs. The direction is ``d = H g_t`` with the L-BFGS
    inverse-Hessian estimate of the ring (``H_0 = \gamma I``, ``\gamma = s.\hat y / \hat y.\hat y``
    of the newest pair; ``d = g_t`` before the first pair), computed in compact form. Once the first
    pair period has passed the direction is rescaled (``direction_norm``): ``"global"`` divides by
    ``\lVert d \rVert`` over all blocks, ``"kl"`` multiplies by ``\min(1, \sqrt{\kappa / g.d})``.
    The update is SGD with momentum on ``d``: ``buf \leftarrow \mu\, buf + d``,
    ``\theta \leftarrow \theta - lr\, buf``.

    Per parameter group: ``lr``, ``momentum``, ``weight_decay``. Curvature settings
    (:class:`CurvatureConfig`) are shared by all groups. A parameter whose ``.grad`` is None is
    treated as having a zero gradient.

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
        direction_norm: ``"global"``, ``"kl"`` or ``"none"``.
        kl_clip: kappa of the ``"kl"`` rescaling.
        history_dtype: dtype of the ring (default: float32, or float64 for float64 parameters);
            bfloat16/float16 halve the bytes read per step.
        check_finite: skip the whole step (and count it) when the gradient has a non-finite entry,
            so it never enters the averages. Costs one host synchronisation per step.
        process_group: shard the blocks over the ranks of this group (data-parallel training where
            every rank holds the same averaged gradient); None for a single process. Each rank then
            holds the curvature state of its own blocks only (:mod:`mlbfgs.distributed`).
        comm_dtype: dtype of the direction exchange between ranks (e.g. ``torch.bfloat16``);
            None sends the working dtype.
        min_curvature: a damped pair with ``s.y_hat`` at or below this is rejected.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        history_size: int = 10,
        update_period: int = 50,
        beta: float = 0.999,
        pair_momentum: float = 0.0,
        damping: float = 0.01,
        curvature_bounds: tuple[float, float] = (0.01, 1.5),
        blocks: BlockSpec = "model",
        direction_norm: str = "global",
        kl_clip: float = 0.005,
        history_dtype: torch.dtype | None = None,
        check_finite: bool = True,
        process_group: Any = None,
        comm_dtype: torch.dtype | None = None,
        min_curvature: float = 1e-12,
    ) -> None:
        _check_group_values(lr, momentum, weight_decay)
        self.config = CurvatureConfig(
            history_size=history_size,
            update_period=update_period,
            beta=beta,
            pair_momentum=pair_momentum,
            damping=damping,
            curvature_bounds=curvature_bounds,
            direction_norm=direction_norm,
            kl_clip=kl_clip,
            min_curvature=min_curvature,
            history_dtype=history_dtype,
            check_finite=check_finite,
        )
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        for group in self.param_groups:
            _check_group_values(group["lr"], group["momentum"], group["weight_decay"])
            extra = set(group) - {"params", "lr", "momentum", "weight_decay"}
            if extra & set(_CURVATURE_KEYS):
                raise ValueError(
                    f"param groups: {sorted(extra & set(_CURVATURE_KEYS))} are curvature settings shared by "
                    "all groups; pass them to MLBFGS(...), not per group"
                )
        all_params = [p for g in self.param_groups for p in g["params"]]
        self.blocks = build_blocks(all_params, blocks)
        self._block_sizes = [sum(p.numel() for p in b) for b in self.blocks]

        from .distributed import resolve_sharding  # the math never depends on it beyond this

        self.sharding = resolve_sharding(process_group, self._block_sizes, comm_dtype)
        self.owners = assign_blocks(self._block_sizes, self.sharding.world_size)
        self.layout = FlatLayout.build(self._block_sizes, self.owners, self.sharding.world_size)
        self.imbalance = load_imbalance(self._block_sizes, self.owners, self.sharding.world_size)
        self.last_pairs: list[PairRecord] = []
        self._buffers: _StepBuffers | None = None

    # ------------------------------------------------------------------ state
    @property
    def owned_blocks(self) -> list[int]:
        return [b for b, r in enumerate(self.owners) if r == self.sharding.rank]

    @property
    def stats(self) -> dict[str, int]:
        """Counters of this rank: pairs accepted/rejected (own blocks), skipped steps, steps taken."""
        gs = self._global_state()
        blocks = [self.state[_block_key(b)] for b in self.owned_blocks if _block_key(b) in self.state]
        return {
            "pairs_accepted": sum(st["pairs_accepted"] for st in blocks),
            "pairs_rejected": sum(st["pairs_rejected"] for st in blocks),
            "skipped_steps": gs["skipped_steps"],
            "step": gs["step"],
        }

    def curvature_bytes(self) -> int:
        """Bytes of curvature state (EMAs, anchors, ring, compact matrices) held by this rank."""
        total = 0
        for b in self.owned_blocks:
            for v in self.state.get(_block_key(b), {}).values():
                if isinstance(v, torch.Tensor):
                    total += v.numel() * v.element_size()
        return total

    def _global_state(self) -> dict:
        if GLOBAL_KEY not in self.state:
            self.state[GLOBAL_KEY] = {
                "step": 0,
                "skipped_steps": 0,
                "world_size": self.sharding.world_size,
                "block_sizes": list(self._block_sizes),
            }
        return self.state[GLOBAL_KEY]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["state"].get(GLOBAL_KEY)
        if saved is not None:
            if saved["world_size"] != self.sharding.world_size:
                raise ValueError(
                    f"load_state_dict: the state was saved with world size {saved['world_size']} but this "
                    f"optimizer runs with {self.sharding.world_size}; each rank holds only its own blocks, "
                    "so load with the same world size"
                )
            if list(saved["block_sizes"]) != self._block_sizes:
                raise ValueError(
                    f"load_state_dict: block sizes differ (saved {saved['block_sizes']}, now {self._block_sizes}); "
                    "use the same model and blocks setting"
                )
        super().load_state_dict(state_dict)
        self._buffers = None  # views must point at the loaded tensors

    def _block_state(self, b: int, device: torch.device) -> dict:
        key = _block_key(b)
        if key not in self.state:
            n = self._block_sizes[b]
            dt = self._history_dtype()
            work = self._work_dtype()
            st = CurvatureHistory.new_state(n, self.config.history_size, dt, device)
            for name in ("P", "G", "P0", "G0"):
                st[name] = torch.zeros(n, dtype=work, device=device)
            if self.config.pair_momentum > 0:
                st["s_prev"] = torch.zeros(n, dtype=work, device=device)
                st["y_prev"] = torch.zeros(n, dtype=work, device=device)
            st.update(pairs_formed=0, pairs_accepted=0, pairs_rejected=0)
            self.state[key] = st
        return self.state[key]

    def _work_dtype(self) -> torch.dtype:
        p = self.param_groups[0]["params"][0]
        return torch.float64 if p.dtype == torch.float64 else torch.float32

    def _history_dtype(self) -> torch.dtype:
        return self.config.history_dtype or self._work_dtype()

    # ------------------------------------------------------------------ step
    def _setup(self) -> _StepBuffers:
        if self._buffers is None:
            device = self.param_groups[0]["params"][0].device
            for b in self.owned_blocks:
                self._block_state(b, device)
            for group in self.param_groups:
                if group["momentum"] != 0:
                    for p in group["params"]:
                        if "momentum_buffer" not in self.state[p]:
                            self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            self._buffers = _StepBuffers(self, device)
        return self._buffers

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        buf = self._setup()
        gs = self._global_state()
        cfg = self.config
        self.last_pairs = []

        flat = buf.flat
        grads = [p.grad for p in buf.params]
        if any(g is None for g in grads):
            torch._foreach_zero_([v for v, g in zip(buf.flat_views, grads) if g is None])
            torch._foreach_copy_(
                [v for v, g in zip(buf.flat_views, grads) if g is not None], [g for g in grads if g is not None]
            )
        else:
            torch._foreach_copy_(buf.flat_views, grads)
        for views, params, group in zip(buf.group_views, buf.group_params, self.param_groups):
            if group["weight_decay"] != 0:
                torch._foreach_add_(views, params, alpha=group["weight_decay"])
        if cfg.check_finite:
            torch.sum(flat, dim=0, out=buf.scalar)
            if not math.isfinite(buf.scalar.item()):
                gs["skipped_steps"] += 1
                return loss

        gs["step"] += 1
        t = gs["step"]
        form_pair = t > 1 and (t - 1) % cfg.update_period == 0
        active = t > cfg.update_period  # the first pair period has passed: rescaling starts
        kl = cfg.direction_norm == "kl" and active
        rank = self.sharding.rank
        if kl:
            slot = self.layout.slot_view(flat, rank)
            slot.zero_()
        for b in self.owned_blocks:
            st = self.state[_block_key(b)]
            g = self.layout.block_view(flat, b)
            pviews, params = buf.block_ema_views[b], buf.block_params[b]
            if t == 1:
                torch._foreach_copy_(pviews, params)
                st["G"].copy_(g)
                st["P0"].copy_(st["P"])
                st["G0"].copy_(g)
            else:
                _lerp_(pviews, params, 1.0 - cfg.beta)
                st["G"].lerp_(g, 1.0 - cfg.beta)
                if form_pair:
                    self._form_pair(b, st, buf)
            history = buf.histories[b]
            if kl:  # g.d of this block into the rank's slot: gamma g.g + p^T Wf p, or g.g without pairs
                gamma = history.gamma if history.num_pairs > 0 else 1.0
                slot.addmv_(g.view(1, -1), g, alpha=gamma)
            if history.num_pairs > 0:
                history.apply_(g)
                if kl:
                    history.add_quadratic_(slot)
        self.sharding.all_gather(flat, self.layout)

        if active and cfg.direction_norm == "global":
            torch.linalg.vector_norm(flat, out=buf.scalar)
            flat.div_(buf.scalar.clamp_(min=1e-30))
        elif kl:
            # nu = min(1, sqrt(kappa / g.d)); nu = 1 when g.d <= 0
            torch.sum(self.layout.all_slots(flat), dim=0, out=buf.scalar)
            buf.kl_clip.fill_(cfg.kl_clip)
            nu = buf.scalar.clamp_(min=1e-30).reciprocal_().mul_(buf.kl_clip).sqrt_().clamp_(max=1.0)
            for rk in range(self.layout.world_size):
                self.layout.slot_view(flat, rk).zero_()
            flat.mul_(nu)

        for views, params, group, bufs, mom in zip(
            buf.group_views, buf.group_params, self.param_groups, buf.group_momenta, buf.momentum
        ):
            if group["momentum"] != 0:
                mom.fill_(group["momentum"])  # a tensor factor: a Python scalar would allocate per tensor
                torch._foreach_mul_(bufs, mom)
                torch._foreach_add_(bufs, views)
                torch._foreach_add_(params, bufs, alpha=-group["lr"])
            else:
                torch._foreach_add_(params, views, alpha=-group["lr"])
        return loss

    def _form_pair(self, b: int, st: dict, buf: _StepBuffers) -> None:
        cfg = self.config
        s, y = st["P0"], st["G0"]
        torch.sub(st["P"], s, out=s)  # s = P - P0, in the anchor's storage
        torch.sub(st["G"], y, out=y)
        if cfg.pair_momentum > 0:
            if st["pairs_formed"] > 0:
                s.lerp_(st["s_prev"], cfg.pair_momentum)
                y.lerp_(st["y_prev"], cfg.pair_momentum)
            st["s_prev"].copy_(s)
            st["y_prev"].copy_(y)
        st["pairs_formed"] += 1
        dots = buf.pair_dots
        torch.dot(s, y, out=dots[0])
        torch.dot(s, s, out=dots[1])
        torch.dot(y, y, out=dots[2])
        sy, ss, yy = dots.tolist()  # one host sync per pair: accepting a pair is a decision
        mu = sy / ss if ss > 0 else float("nan")
        accepted = False
        if math.isfinite(sy) and math.isfinite(ss) and math.isfinite(yy) and ss > 0:
            lo, hi = cfg.curvature_bounds
            phi = damping_factor(sy, ss, lo, hi, cfg.damping)
            sy_hat = damped_curvature(sy, ss, phi)
            yy_hat = phi * phi * yy + 2 * phi * (1 - phi) * sy + (1 - phi) ** 2 * ss
            if sy_hat > cfg.min_curvature and yy_hat > 0 and math.isfinite(yy_hat):
                buf.histories[b].push(s, y, phi)
                accepted = True
        st["pairs_accepted" if accepted else "pairs_rejected"] += 1
        self.last_pairs.append(PairRecord(b, mu, accepted))
        st["P0"].copy_(st["P"])
        st["G0"].copy_(st["G"])


def _lerp_(dst: list[torch.Tensor], src: list[torch.Tensor], weight: float) -> None:
    if all(d.dtype == s.dtype for d, s in zip(dst, src)):
        torch._foreach_lerp_(dst, src, weight)
    else:
        torch._foreach_mul_(dst, 1.0 - weight)
        torch._foreach_add_(dst, src, alpha=weight)


def _check_group_values(lr: Any, momentum: Any, weight_decay: Any) -> None:
    if not (isinstance(lr, (int, float, torch.Tensor)) and lr >= 0):
        raise ValueError(f"lr: expected a value >= 0, got {lr!r}")
    if not (isinstance(momentum, (int, float)) and 0.0 <= momentum < 1.0):
        raise ValueError(f"momentum: expected a value in [0, 1), got {momentum!r}")
    if not (isinstance(weight_decay, (int, float)) and weight_decay >= 0.0):
        raise ValueError(f"weight_decay: expected a value >= 0, got {weight_decay!r}")


class _StepBuffers:
    """Preallocated flat buffer, its views, and the per-block history handles (rebuilt on load)."""

    def __init__(self, opt: MLBFGS, device: torch.device) -> None:
        layout = opt.layout
        work = opt._work_dtype()
        self.flat = torch.zeros(layout.numel, dtype=work, device=device)
        self.scalar = torch.zeros((), dtype=work, device=device)
        self.pair_dots = torch.zeros(3, dtype=work, device=device)
        self.kl_clip = torch.zeros((), dtype=work, device=device)
        self.momentum = [torch.zeros((), dtype=work, device=device) for _ in opt.param_groups]
        self.params: list[torch.Tensor] = []
        self.flat_views: list[torch.Tensor] = []
        view_of: dict[int, torch.Tensor] = {}
        self.block_params: dict[int, list[torch.Tensor]] = {}
        self.block_ema_views: dict[int, list[torch.Tensor]] = {}
        self.histories: dict[int, CurvatureHistory] = {}
        for b, block in enumerate(opt.blocks):
            views = param_views(opt.layout.block_view(self.flat, b), 0, block)
            self.params.extend(block)
            self.flat_views.extend(views)
            view_of.update({id(p): v for p, v in zip(block, views)})
        for b in opt.owned_blocks:
            st = opt.state[_block_key(b)]
            self.block_params[b] = opt.blocks[b]
            self.block_ema_views[b] = param_views(st["P"], 0, opt.blocks[b])
            self.histories[b] = CurvatureHistory(st)
        self.group_params = [list(g["params"]) for g in opt.param_groups]
        self.group_views = [[view_of[id(p)] for p in g["params"]] for g in opt.param_groups]
        self.group_momenta = [
            [opt.state[p]["momentum_buffer"] for p in g["params"]] if g["momentum"] != 0 else []
            for g in opt.param_groups
        ]
