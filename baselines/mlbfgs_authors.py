"""The authors' reference mL-BFGS reproduced behaviour for behaviour, with each behaviour switchable to ours.

Two registry names:

- ``mlbfgs_authors``: the block version, ``BlockSlimQN`` (yuehniu/mL-BFGS, opt/slimblock.py), as
  run-SLIM.sh runs it (beta 0.999 for both averages, xi 0.9, T 50, M 10, damping 0.01).
- ``slimqn_authors``: the whole-model version, ``SlimQN`` (opt/slim.py).

What the block version does at step k (1-based), per block b, with theta the parameters before the
step and g the mini-batch gradient (notation of the spec, ``shared/spec/mlbfgs.md``):

1. ``P <- beta P + theta``: a sum with no (1 - beta), starting at P = theta_1, so s carries a growing
   multiple of theta early on (G is a sum too; its restart below keeps y's windows alike)  [behaviour 1]
2. ``G <- beta G + (1 + lambda) g`` (weight decay as lambda * g, starting at (1 + lambda) g_1) [3]
3. when ``k % T == 0``: the first time the anchors P0 = P, G0 = G are stored; afterwards a pair
   ``s = P - P0``, ``y = G - G0`` is formed and the anchors move; then G restarts at the current
   (1 + lambda) g (so y and s cover different windows). The first pair is thus formed at k = 2T and
   used by the same step.                                                                [2, 4]
4. pair momentum: ``s <- (1 - xi) s + xi s_prev``, ``y <- (1 - xi) y + xi y_hat_prev`` with the
   previous *stored* (damped) y_hat.                                                     [5]
5. damping: mu = s.y / (s.s + 1e-12); phi = (1 - sL)/(1 - mu) below sL, (sH - 1)/(mu - 1) above sH,
   else 1; phi <- min(phi, 1 - damping) (so every pair is damped by at least ``damping``);
   y_hat = phi y + (1 - phi) s; rho = s.y_hat; gamma = rho / (y_hat.y_hat + 1e-12). No pair is rejected.
6. once a pair exists: per block ``d_b = H_b (g_b + lambda theta_b)`` by the two-loop recursion; every
   parameter's update direction is then its d (block parameters) or its raw g (parameters outside
   every block: no weight decay, no preconditioning) divided by sqrt(sum_b d_b.d_b).
   Before the first pair: plain SGD on g + lambda theta, not normalised.
7. SGD momentum: buf <- momentum buf + direction; theta <- theta - lr buf.

Blocks ("authors" partition, behaviour 6): ResNet-18 style models: every parameter except the stem
(first layer and the normalisation right after it) and the classifier (last layer) in one block;
torchvision ResNet-50 (Bottleneck stages): one block per stage (``layer1``..``layer4``), stem and fc
outside; ViT / DeiT: one block of everything. Our other models follow the ResNet-18 rule.

The whole-model version differs: one block of all parameters; normalised averages
``P <- beta P + (1 - beta) theta`` (same for G, no weight decay in G, no restart, no pair momentum);
mu and the two-loop use eps 1e-5; bounds (0.01, 1.0); a pair with s.y_hat < 1e-4 is dropped (after
the full ring already dropped its oldest pair, so the ring shrinks); the direction is
``nu d`` with ``nu = min(1, sqrt(kappa / (g.d)))``, g the raw gradient (kappa = 1 in run-SLIM.sh;
g.d < 0 raises ValueError, as ``math.sqrt`` does there).

``AuthorsBehaviour`` switches each behaviour of the block version to ours (the ablation of the
differences): ``averages="mean"`` (both averages normalised), ``restart_grad_average=False``, ``grad_decay="theta"``,
``timing="ours"`` (anchors at step 1, pairs at steps 1 + kT), ``pair_momentum_on="raw"``.

This is a reproduction for comparisons, written for clarity: it concatenates block vectors every
step and runs the two-loop recursion, where ``mlbfgs.MLBFGS`` preallocates and uses the compact form.

What frameworks do behind an optimizer's back (not in the reference) is followed at the start of each
step, by comparing ``param_groups`` with the layout the blocks were built for: a cast or move of the
parameters casts the state with them (as ``load_state_dict`` would); parameters appended to a group by
hand form one new block per group with a fresh history (as :meth:`AuthorsMLBFGS.add_param_group`
does); a parameter removed or replaced is refused with a ``ValueError`` naming it (the blocks are
lists of the parameters it was built with). A cleared state restarts as a new optimizer would.
``load_state_dict`` places the state in a post-hook registered at construction, so a user's
post-hooks see it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, cast

import torch
from torch import nn

from .base import TrainingOptimizer, trainable_parameters
from .config import check_int, check_nonneg, check_unit_interval
from .contract import (
    FROZEN_HINT,
    ParamLayout,
    PicklableOptimizer,
    check_dense_gradients,
    check_layout_change,
    check_parameters,
    check_saved_settings,
    first_saved_index,
    lr_value,
)

BLOCK_EPS = 1e-12  # opt/slimblock.py: epsilon
MODEL_EPS = 1e-5  # opt/slim.py: epsilon
AUTHORS_KEY = "authors"  # key of the optimizer's own state in ``optimizer.state``
_CHANGES_ALLOWED = ("its blocks (and their curvature histories) are lists of the parameters it was built with, so "
                    "parameters may be added (add_param_group, or appended to a group: a new block) or cast and "
                    "moved, not removed or replaced: build a new optimizer for new tensors")


@dataclass(frozen=True)
class AuthorsBehaviour:
    """The block version's behaviours; each field's first allowed value is the authors', the second ours."""

    averages: str = "sum"  # "sum": P <- beta P + theta (G alike); "mean": P <- beta P + (1 - beta) theta
    restart_grad_average: bool = True  # G restarts at the current gradient after each pair
    grad_decay: str = "gradient"  # weight decay in G: "gradient" (lambda g) or "theta" (lambda theta)
    timing: str = "authors"  # "authors": anchors at T, pairs at kT; "ours": anchors at 1, pairs at 1 + kT
    pair_momentum_on: str = "damped"  # y mixes the previous "damped" y_hat or the previous "raw" y

    def __post_init__(self) -> None:
        allowed = {"averages": ("sum", "mean"), "grad_decay": ("gradient", "theta"),
                   "timing": ("authors", "ours"), "pair_momentum_on": ("damped", "raw")}
        for name, values in allowed.items():
            if getattr(self, name) not in values:
                raise ValueError(f"{name} must be one of {list(values)}, got {getattr(self, name)!r}")
        if not isinstance(self.restart_grad_average, bool):
            raise ValueError(f"restart_grad_average must be a bool, got {self.restart_grad_average!r}")


def authors_damping(s: torch.Tensor, y: torch.Tensor, bounds: tuple[float, float], damping: float,
                    eps: float) -> tuple[torch.Tensor, float]:
    """(y_hat, mu): the reference's damping (opt/slimblock.py ``__get_dg``), mu = s.y / (s.s + eps).

    phi = (1 - sL) / (1 - mu) if mu < sL; (sH - 1) / (mu - 1) if mu > sH; else 1; then
    phi = min(phi, 1 - damping) and y_hat = phi y + (1 - phi) s.
    """
    low, high = bounds
    mu = float(torch.dot(s, y) / (torch.dot(s, s) + eps))
    phi = 1.0
    if mu < low:
        phi = (1.0 - low) / (1.0 - mu)
    elif mu > high:
        phi = (high - 1.0) / (mu - 1.0)
    phi = min(phi, 1.0 - damping)
    return phi * y + (1.0 - phi) * s, mu


def authors_two_loop(g: torch.Tensor, S: list[torch.Tensor], Y: list[torch.Tensor], rho: list[float],
                     gamma: float, eps: float = 0.0) -> torch.Tensor:
    """H g by the two-loop recursion as the reference writes it (rho_i = s_i.y_i, H0 = gamma I; the
    whole-model version adds ``eps`` to every rho_i). Shapes: g and every s_i, y_i are (n,)."""
    q = g.clone()
    alphas = []
    for s, y, r in zip(reversed(S), reversed(Y), reversed(rho), strict=True):
        a = float(torch.dot(s, q)) / (r + eps)
        alphas.append(a)
        q.add_(y, alpha=-a)
    q.mul_(gamma)
    for s, y, r, a in zip(S, Y, rho, reversed(alphas), strict=True):
        b = float(torch.dot(y, q)) / (r + eps)
        q.add_(s, alpha=a - b)
    return q


def _leaf_modules_with_params(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not list(m.children()) and any(True for _ in m.parameters(recurse=False))]


_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def authors_blocks(model: nn.Module) -> tuple[list[list[nn.Parameter]], list[nn.Parameter]]:
    """(blocks, outside): the authors' partition (opt/../model_utils get_pblocks*) for ``model``.

    ViT/DeiT (a module with ``config.patch_size`` or class name containing "ViT"/"Deit"): one block.
    torchvision ResNets with Bottleneck stages: one block per ``layer1..layer4``, the rest outside.
    Otherwise (ResNet-18 rule): the stem (first leaf module with parameters and the normalisation
    layers right after it) and the classifier (last leaf module) outside, everything else one block.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    name = type(model).__name__.lower()
    if "vit" in name or "deit" in name or hasattr(getattr(model, "config", None), "patch_size"):
        return [params], []
    stages = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(s, nn.Module) for s in stages) and any(
            type(m).__name__ == "Bottleneck" for s in stages for m in s.modules()):
        blocks = [[p for p in s.parameters() if p.requires_grad] for s in stages]
        inside = {id(p) for b in blocks for p in b}
        return blocks, [p for p in params if id(p) not in inside]
    leaves = _leaf_modules_with_params(model)
    if len(leaves) < 3:
        return [params], []
    stem = [leaves[0]]
    for m in leaves[1:]:
        if not isinstance(m, _NORMS):
            break
        stem.append(m)
    excluded = {id(p) for m in [*stem, leaves[-1]] for p in m.parameters(recurse=False)}
    block = [p for p in params if id(p) not in excluded]
    return ([block] if block else []), [p for p in params if id(p) in excluded]


class AuthorsMLBFGS(PicklableOptimizer):
    """The reference block version (``variant="block"``) or whole-model version (``variant="model"``).

    Args:
        params: every trainable parameter (one param group).
        blocks: lists of parameters, each a block (``variant="block"``); parameters of ``params`` in no
            block are "outside" (raw gradient, normalised by the blocks' direction norm).
        lr, momentum, weight_decay: SGD with momentum on the direction (weight decay lambda, see above).
        beta: decay of both averages (run-SLIM.sh passes the same ``--mm-p`` and ``--mm-g``).
        pair_momentum: xi (``--mmm``; block version only).
        update_period: T; history_size: M; damping: tau0.
        bounds: (sigma_L, sigma_H): (0.01, 1.5) in the block version, (0.01, 1.0) in the model version.
        kl_clip: kappa of the model version's nu (``--grad-clip``, 1 in run-SLIM.sh).
        rho_min: the model version drops a pair with s.y_hat below it (1e-4).
        behaviour: switches of the block version's behaviours to ours (:class:`AuthorsBehaviour`).

    Raises ValueError for invalid settings (naming the argument) and, in the model version, when
    g.d < 0 (the reference's ``math.sqrt`` of a negative number).
    """

    def __init__(self, params: Any, blocks: list[list[nn.Parameter]] | None = None, *, variant: str = "block",
                 lr: float = 0.1, momentum: float = 0.9, weight_decay: float = 0.0, beta: float = 0.999,
                 pair_momentum: float = 0.9, update_period: int = 50, history_size: int = 10,
                 damping: float = 0.01, bounds: tuple[float, float] | None = None, kl_clip: float = 1.0,
                 rho_min: float = 1e-4, behaviour: AuthorsBehaviour | None = None) -> None:
        if variant not in ("block", "model"):
            raise ValueError(f"variant must be one of ['block', 'model'], got {variant!r}")
        check_nonneg("lr", lr)
        check_unit_interval("momentum", momentum)
        check_nonneg("weight_decay", weight_decay)
        check_unit_interval("beta", beta)
        check_unit_interval("pair_momentum", pair_momentum)
        check_int("update_period", update_period)
        check_int("history_size", history_size)
        check_unit_interval("damping", damping)
        bounds = tuple(bounds) if bounds is not None else ((0.01, 1.5) if variant == "block" else (0.01, 1.0))
        if len(bounds) != 2 or not 0 <= bounds[0] < 1 <= bounds[1]:
            raise ValueError(f"bounds must be (sigma_L, sigma_H) with 0 <= sigma_L < 1 <= sigma_H, got {bounds}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})
        all_params = [p for g in self.param_groups for p in g["params"]]
        check_parameters(all_params, "mlbfgs_authors")
        if variant == "model":
            blocks = [list(all_params)]
        elif blocks is None:
            raise ValueError("blocks is required for variant 'block' (see authors_blocks)")
        known = {id(p) for p in all_params}
        seen: set[int] = set()
        for block in blocks:
            for p in block:
                if id(p) not in known or id(p) in seen:
                    raise ValueError("blocks must list distinct parameters of params")
                seen.add(id(p))
        self.variant = variant
        self.blocks = [list(b) for b in blocks if b]
        self.outside = [p for p in all_params if id(p) not in seen]
        self.hyper = {"beta": beta, "pair_momentum": pair_momentum, "update_period": update_period,
                      "history_size": history_size, "damping": damping, "bounds": bounds, "kl_clip": kl_clip,
                      "rho_min": rho_min}
        self.behaviour = behaviour or AuthorsBehaviour()
        self.last_pairs: list[dict[str, Any]] = []
        self._first = all_params[0]
        self._layout = ParamLayout(self.param_groups)  # what the blocks are built for (checked each step)
        self._loading: dict[str, Any] | None = None  # the entry a load places, between its two hooks
        self._mark_blocks()
        self._state()
        self.state[self._first]["settings"] = self._settings()
        # registered now, so they run before any hook a user registers: a user's post-hook sees the
        # loaded state in place
        self.register_load_state_dict_pre_hook(_check_before_load)
        self.register_load_state_dict_post_hook(_place_after_load)

    def _mark_blocks(self) -> None:
        # every parameter holds state (its block, -1 outside; its momentum buffer), created now, as
        # torch's strict checkpoint loading and its load-into-a-fresh-state recipe expect
        index = {id(p): b for b, block in enumerate(self.blocks) for p in block}
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["block_index"] = index.get(id(p), -1)
                if group["momentum"] != 0 and "momentum_buf" not in self.state[p]:
                    self.state[p]["momentum_buf"] = torch.zeros_like(p)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """A group added later (not in the reference, which never adds one) is one new block with a
        fresh history; its first anchor is set at its first pair step."""
        if hasattr(self, "blocks"):  # not while __init__ builds the groups: first follow earlier edits
            self._sync()
        super().add_param_group(param_group)
        if not hasattr(self, "blocks"):  # still in __init__
            return
        new = list(self.param_groups[-1]["params"])
        check_parameters([p for g in self.param_groups for p in g["params"]], "mlbfgs_authors")
        self._layout = ParamLayout(self.param_groups)
        if new:
            self._add_block(new)
            self.state[self._first]["settings"] = self._settings()
            self._mark_blocks()

    def _add_block(self, new: list[nn.Parameter]) -> None:
        self.blocks.append(new)
        if AUTHORS_KEY in self.state.get(self._first, {}):
            self._state()["blocks"][str(len(self.blocks) - 1)] = self._new_block_state(new)

    # -- the layout and state checked against param_groups and state at each step ------------------
    @torch._dynamo.disable  # bookkeeping by identity: run eagerly under torch.compile
    def _sync(self) -> None:
        """Follow what a framework changed since the last step (see the module docstring). In a plain
        run it compares the parameters' identities and a few attributes, and allocates nothing."""
        if not self._layout.matches(self.param_groups):
            self._relayout()
        if AUTHORS_KEY not in self.state.get(self._first, {}):
            # cleared or replaced by an empty state: start over as an optimizer built now would
            # (torch.optim's own optimizers restart lazily the same way)
            self._state()
            self.state[self._first]["settings"] = self._settings()
            self._mark_blocks()

    def _relayout(self) -> None:
        groups = [list(g["params"]) for g in self.param_groups]
        added = check_layout_change(type(self).__name__, self._layout, groups, _CHANGES_ALLOWED)
        check_parameters([p for ps in groups for p in ps], "mlbfgs_authors")
        per_group: dict[int, list[nn.Parameter]] = {}
        for g, _, p in added:
            per_group.setdefault(g, []).append(cast(nn.Parameter, p))
        for new in per_group.values():  # as a group added by add_param_group: one block, fresh history
            self._add_block(new)
        first = next(p for ps in groups for p in ps)
        if first is not self._first:  # the optimizer's own entries live under the first parameter
            entry = self.state.get(self._first, {})
            for key in ("settings", AUTHORS_KEY):
                if key in entry:
                    self.state.setdefault(first, {})[key] = entry.pop(key)
            self._first = first
        self._cast_state()
        self._layout = ParamLayout(self.param_groups)
        self.state.setdefault(self._first, {})["settings"] = self._settings()
        self._mark_blocks()

    def _cast_state(self) -> None:
        """The state in its parameters' dtype and device after a cast or move (``model.double()``,
        ``.to(device)``), as ``load_state_dict`` would place it: each parameter's own tensors follow it,
        each block's follow its first parameter, and rho stays float64."""
        def follow(entry: dict[str, Any], ref: torch.Tensor, keep_float64: tuple[str, ...] = ()) -> None:
            for key, value in entry.items():
                if isinstance(value, torch.Tensor) and value.is_floating_point():
                    dtype = torch.float64 if key in keep_float64 else ref.dtype
                    if value.dtype != dtype or value.device != ref.device:
                        entry[key] = value.to(dtype=dtype, device=ref.device)

        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    follow(self.state[p], p)
        authors = self.state.get(self._first, {}).get(AUTHORS_KEY)
        if authors is not None:
            for b, block in enumerate(self.blocks):
                follow(authors["blocks"][str(b)], block[0], ("rho",))

    def _settings(self) -> dict[str, Any]:
        # numbers and tensors only, as flattened checkpoints need
        sizes = torch.tensor([sum(p.numel() for p in b) for b in self.blocks], dtype=torch.int64)
        return {"variant": ["block", "model"].index(self.variant), "history_size": self.hyper["history_size"],
                "update_period": self.hyper["update_period"], "blocks": sizes}

    def state_dict(self) -> dict[str, Any]:
        self._sync()
        self._state()
        self.state[self._first]["settings"] = self._settings()
        return super().state_dict()

    def _before_load(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """load_state_dict pre-hook: check ``state_dict`` and take the optimizer's own entry out of it;
        torch would cast rho (float64) to the parameters' dtype, so :meth:`_after_load` places it."""
        self._sync()
        name = type(self).__name__
        first = first_saved_index(state_dict)
        saved = dict(state_dict["state"])
        entry = dict(saved.get(first, {}))
        legacy = saved.pop(AUTHORS_KEY, None)  # checkpoints written before the state moved under a parameter
        if legacy is None:
            check_saved_settings(name, entry.pop("settings", None), self._settings())
            authors = entry.pop(AUTHORS_KEY, None)
            if authors is None:
                raise ValueError(f"{name}.load_state_dict: no {AUTHORS_KEY!r} entry under the first parameter"
                                 + FROZEN_HINT)
        else:
            entry.pop("settings", None)
            authors = self._from_legacy(legacy)
        saved[first] = entry
        self._loading = authors
        return {**state_dict, "state": saved}

    def _after_load(self) -> None:
        """load_state_dict post-hook (runs before a user's): the entry taken out by :meth:`_before_load`
        placed under the first parameter (device and parameter dtype for the vectors, rho float64)."""
        authors, self._loading = self._loading, None
        if authors is None:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the pre-hook that takes its own entry out of "
                             "the state did not run (was its handle removed?)")
        self.state[self._first][AUTHORS_KEY] = self._place(authors)
        self.state[self._first]["settings"] = self._settings()
        self._mark_blocks()

    def _place(self, value: Any, key: str = "") -> Any:
        if isinstance(value, torch.Tensor):
            dtype = torch.float64 if key == "rho" else self._first.dtype
            return value.to(device=self._first.device, dtype=dtype if value.is_floating_point() else value.dtype,
                            copy=True)
        if isinstance(value, dict):
            return {k: self._place(v, k) for k, v in value.items()}
        return int(value) if isinstance(value, bool) else value

    def _from_legacy(self, legacy: dict[str, Any]) -> dict[str, Any]:
        """The state of checkpoints written before it had fixed-size tensors (lists, None)."""
        blocks = {}
        for b, (block, old) in enumerate(zip(self.blocks, legacy["blocks"], strict=True)):
            new = self._new_block_state(block)
            for key, flag in (("P", "has_avg"), ("P0", "has_anchor"), ("y_prev_raw", "has_y_prev")):
                new[flag] = int(old[key] is not None)
            for key in ("P", "G", "P0", "G0", "y_prev_raw"):
                if old[key] is not None:
                    new[key].copy_(old[key])
            for s, y, rho in zip(old["S"], old["Y"], old["rho"], strict=True):
                self._ring_push(new, s, y, rho)
            new["gamma"] = float(old["gamma"])
            blocks[str(b)] = new
        return {"step": int(legacy["step"]), "started": int(legacy["started"]), "blocks": blocks}

    # -- state (all of it in optimizer.state, so state_dict / load_state_dict resume) ----------------
    def _new_block_state(self, block: list[nn.Parameter]) -> dict[str, Any]:
        # fixed-size tensors (the reference's lists become a ring; None becomes zeros with a flag), so
        # a fresh optimizer's state already has its whole structure for the checkpoint helpers
        n, m, ref = sum(p.numel() for p in block), self.hyper["history_size"], block[0]

        def zeros(*shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype or ref.dtype, device=ref.device)

        return {"P": zeros(n), "G": zeros(n), "P0": zeros(n), "G0": zeros(n), "has_avg": 0, "has_anchor": 0,
                "S": zeros(m, n), "Y": zeros(m, n), "rho": zeros(m, dtype=torch.float64), "count": 0, "head": 0,
                "gamma": 1.0, "y_prev_raw": zeros(n), "has_y_prev": 0}

    def _state(self) -> dict[str, Any]:
        entry = self.state[self._first]  # under the first parameter: the state is keyed by parameters only
        if AUTHORS_KEY not in entry:
            blocks = {str(b): self._new_block_state(block) for b, block in enumerate(self.blocks)}
            entry[AUTHORS_KEY] = {"step": 0, "started": 0, "blocks": blocks}
        return entry[AUTHORS_KEY]

    def _block_states(self) -> list[dict[str, Any]]:
        blocks = self._state()["blocks"]
        return [blocks[str(b)] for b in range(len(self.blocks))]

    @staticmethod
    def _ring_order(bst: dict[str, Any]) -> list[int]:
        m = bst["S"].shape[0]
        return [(bst["head"] - bst["count"] + i) % m for i in range(bst["count"])]

    @staticmethod
    def _ring_drop_oldest(bst: dict[str, Any]) -> None:
        bst["count"] -= 1

    @staticmethod
    def _ring_push(bst: dict[str, Any], s: torch.Tensor, y_hat: torch.Tensor, rho: float) -> None:
        i = bst["head"]
        bst["S"][i].copy_(s)
        bst["Y"][i].copy_(y_hat)
        bst["rho"][i] = rho
        bst["head"] = (i + 1) % bst["S"].shape[0]
        bst["count"] += 1

    @staticmethod
    def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([t.reshape(-1) for t in tensors])

    def _pair_step(self, k: int) -> tuple[bool, bool]:
        """(anchor-only step, pair step) at step k."""
        period = self.hyper["update_period"]
        if self.variant == "block" and self.behaviour.timing == "ours":
            return k == 1, k > 1 and (k - 1) % period == 0
        on = k % period == 0
        return on and k == period, on and k > period

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        self._sync()  # a cast, reset, load or hand edit since the last step (see the module docstring)
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.last_pairs = []
        all_params = [p for g in self.param_groups for p in g["params"]]
        check_dense_gradients(all_params, "mlbfgs_authors")
        if all(p.grad is None for p in all_params):  # nothing to do, and the step does not count
            return loss
        wd_of = {id(p): g["weight_decay"] for g in self.param_groups for p in g["params"]}
        st = self._state()
        st["step"] += 1
        k = st["step"]
        anchor_only, pair_step = self._pair_step(k)
        flats = []  # (theta, g, weight decay) of each block, flattened once per step
        for b, (block, bst) in enumerate(zip(self.blocks, self._block_states(), strict=True)):
            # a parameter without a gradient counts as zero gradient (not in the reference, which
            # assumes every parameter has one); a block without any gradient skips the step
            wd = wd_of[id(block[0])]
            if all(p.grad is None for p in block):
                flats.append(None)
                continue
            theta = self._flat([p.detach() for p in block])
            g = self._flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in block])
            flats.append((theta, g, wd))
            self._update_averages(bst, theta, g, wd, k, anchor_only, pair_step, b, st)
        directions = self._directions(st, flats) if st["started"] else None
        for group in self.param_groups:
            lr, momentum, wd = lr_value(group["lr"]), group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = directions[id(p)] if directions is not None else p.grad + wd * p.detach()
                pst = self.state[p]
                if momentum != 0:  # the buffer starts at zeros: 0 * momentum + d = d, the reference's clone of d
                    if "momentum_buf" not in pst:
                        pst["momentum_buf"] = torch.zeros_like(p)
                    pst["momentum_buf"].mul_(momentum).add_(d)
                    d = pst["momentum_buf"]
                p.add_(d, alpha=-lr)
        return loss

    def _update_averages(self, bst: dict, theta: torch.Tensor, g: torch.Tensor, wd: float, k: int,
                         anchor_only: bool, pair_step: bool, b: int, st: dict) -> None:
        h, beh = self.hyper, self.behaviour
        beta = h["beta"]
        if self.variant == "model":  # opt/slim.py: normalised averages, no weight decay in G
            g_in, weight = g.clone(), 1.0 - beta
        else:
            g_in = g * (1.0 + wd) if beh.grad_decay == "gradient" else g + wd * theta
            weight = 1.0 if beh.averages == "sum" else 1.0 - beta
        if not bst["has_avg"]:
            bst["P"].copy_(theta)
            bst["G"].copy_(g_in)
            bst["has_avg"] = 1
        else:
            bst["P"].mul_(beta).add_(theta, alpha=weight)
            bst["G"].mul_(beta).add_(g_in, alpha=weight)
        if anchor_only or (pair_step and not bst["has_anchor"]):  # a block added later anchors at its first pair step
            bst["P0"].copy_(bst["P"])
            bst["G0"].copy_(bst["G"])
            bst["has_anchor"] = 1
            if self.variant == "block" and beh.restart_grad_average:
                bst["G"].copy_(g_in)
            return
        if not pair_step or not bst["has_anchor"]:
            return
        s = bst["P"] - bst["P0"]
        y = bst["G"] - bst["G0"]
        bst["P0"].copy_(bst["P"])
        bst["G0"].copy_(bst["G"])
        if self.variant == "block" and beh.restart_grad_average:
            bst["G"].copy_(g_in)
        if self.variant == "block":
            self._add_block_pair(bst, s, y, b, st)
        else:
            self._add_model_pair(bst, s, y, b, st)

    def _add_block_pair(self, bst: dict, s: torch.Tensor, y: torch.Tensor, b: int, st: dict) -> None:
        h = self.hyper
        xi = h["pair_momentum"]
        if bst["count"]:
            newest = (bst["head"] - 1) % bst["S"].shape[0]
            s = (1.0 - xi) * s + xi * bst["S"][newest]
            prev = bst["Y"][newest] if self.behaviour.pair_momentum_on == "damped" else bst["y_prev_raw"]
            y = (1.0 - xi) * y + xi * prev
        bst["y_prev_raw"].copy_(y)
        bst["has_y_prev"] = 1
        y_hat, mu = authors_damping(s, y, h["bounds"], h["damping"], BLOCK_EPS)
        if bst["count"] == h["history_size"]:
            self._ring_drop_oldest(bst)
        rho = float(torch.dot(s, y_hat))
        self._ring_push(bst, s, y_hat, rho)
        bst["gamma"] = rho / (float(torch.dot(y_hat, y_hat)) + BLOCK_EPS)
        st["started"] = 1
        self.last_pairs.append(_pair_record(b, mu, True, rho, s, bst["gamma"]))

    def _add_model_pair(self, bst: dict, s: torch.Tensor, y: torch.Tensor, b: int, st: dict) -> None:
        h = self.hyper
        if bst["count"] == h["history_size"]:  # the reference drops the oldest before the check below
            self._ring_drop_oldest(bst)
        y_hat, mu = (y, float(torch.dot(s, y) / (torch.dot(s, s) + MODEL_EPS)))
        if h["damping"] > 0:
            y_hat, mu = authors_damping(s, y, h["bounds"], h["damping"], MODEL_EPS)
        rho = float(torch.dot(s, y_hat))
        accepted = rho >= h["rho_min"]
        if accepted:
            self._ring_push(bst, s, y_hat, rho)
            bst["gamma"] = rho / (float(torch.dot(y_hat, y_hat)) + MODEL_EPS)
            st["started"] = 1
        self.last_pairs.append(_pair_record(b, mu, accepted, rho, s, bst["gamma"] if accepted else math.nan))

    def _directions(self, st: dict, flats: list[tuple[torch.Tensor, torch.Tensor, float] | None]
                    ) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        sq, norms = 0.0, []
        recorded = {rec["block"]: rec for rec in self.last_pairs}  # diagnostics of this step's pairs
        squares: dict[int, float] = {}
        for b, (block, bst, flat) in enumerate(zip(self.blocks, self._block_states(), flats, strict=True)):
            if flat is None:
                continue
            theta, g_raw, wd = flat
            g = g_raw + wd * theta
            if b in recorded:
                recorded[b]["grad_norm"] = float(torch.linalg.vector_norm(g))
            eps = MODEL_EPS if self.variant == "model" else 0.0
            if bst["count"]:
                order = self._ring_order(bst)
                d = authors_two_loop(g, [bst["S"][i] for i in order], [bst["Y"][i] for i in order],
                                     [float(bst["rho"][i]) for i in order], bst["gamma"], eps)
            else:
                d = g.clone()
            if self.variant == "model":
                dot = float(torch.dot(g_raw, d))
                if dot < 0:
                    raise ValueError(f"g.d = {dot:.3e} < 0: the reference's KL scaling takes sqrt(kappa / g.d)")
                kappa = self.hyper["kl_clip"]
                nu = min(1.0, math.sqrt(kappa / dot)) if kappa > 0 and dot > 0 else 1.0  # g.d = 0: d = 0 anyway
                d = d * nu
            squares[b] = float(torch.dot(d, d))
            sq += squares[b]
            norms.append(d)
            offset = 0
            for p in block:
                out[id(p)] = d[offset: offset + p.numel()].view_as(p)
                offset += p.numel()
        for b, rec in recorded.items():  # the block's share of |d|^2 before the global rescaling
            rec["direction_share"] = squares[b] / sq if b in squares and sq > 0 else math.nan
        if self.variant == "block":
            # the global norm as the reference computes it; when the sum of squares over- or underflows
            # (gradients near 1e+-30) it is recomputed scaled, and a zero direction stays zero (the
            # reference would divide 0 by 0)
            norm = math.sqrt(sq)
            if not (math.isfinite(norm) and norm > 0):
                norm = float(_norm(torch.cat([d.reshape(-1) for d in norms]))) if norms else 0.0
                norm = norm if norm > 0 else 1.0
            out = {k: v / norm for k, v in out.items()}
            for p in self.outside:
                if p.grad is not None:
                    out[id(p)] = p.grad / norm
        return out


def _check_before_load(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """load_state_dict pre-hook of :class:`AuthorsMLBFGS` (module level: pickles by name)."""
    return cast(AuthorsMLBFGS, optimizer)._before_load(state_dict)


def _place_after_load(optimizer: torch.optim.Optimizer) -> None:
    """load_state_dict post-hook of :class:`AuthorsMLBFGS`."""
    cast(AuthorsMLBFGS, optimizer)._after_load()


def _pair_record(b: int, mu: float, accepted: bool, rho: float, s: torch.Tensor, gamma: float) -> dict[str, Any]:
    """A curvature record with the columns of ``mlbfgs.PairRecord``: ``damped_mu = s.y_hat / s.s``;
    ``grad_norm`` and ``direction_share`` are filled in when the step's directions are computed."""
    ss = float(torch.dot(s, s))
    return {"block": b, "mu": mu, "accepted": accepted, "damped_mu": rho / ss if accepted and ss > 0 else math.nan,
            "gamma": gamma, "grad_norm": math.nan, "direction_share": math.nan}


def _norm(v: torch.Tensor) -> torch.Tensor:
    """``|v|`` as ``a |v / a|`` with ``a = max |v_i|`` (no overflow or underflow of the squares)."""
    a = v.abs().max()
    return a * torch.linalg.vector_norm(v / a) if a > 0 else a


@dataclass(frozen=True)
class MLBFGSAuthorsConfig:
    """``mlbfgs_authors``: BlockSlimQN as run-SLIM.sh runs it: lr 0.1, momentum 0.9, beta 0.999 (both
    averages), xi 0.9, T 50, M 10, damping 0.01, bounds (0.01, 1.5), the authors' block partition.
    The behaviour switches (``averages``, ...) turn one behaviour at a time into ours."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    beta: float = 0.999
    pair_momentum: float = 0.9
    update_period: int = 50
    history_size: int = 10
    damping: float = 0.01
    curvature_bounds: tuple[float, float] = (0.01, 1.5)
    averages: str = "sum"
    restart_grad_average: bool = True
    grad_decay: str = "gradient"
    timing: str = "authors"
    pair_momentum_on: str = "damped"

    def __post_init__(self) -> None:
        if isinstance(self.curvature_bounds, list):
            object.__setattr__(self, "curvature_bounds", tuple(self.curvature_bounds))
        self.behaviour()  # validates the switches

    def behaviour(self) -> AuthorsBehaviour:
        return AuthorsBehaviour(self.averages, self.restart_grad_average, self.grad_decay, self.timing,
                                self.pair_momentum_on)


@dataclass(frozen=True)
class SlimQNAuthorsConfig:
    """``slimqn_authors``: SlimQN (opt/slim.py) with run-SLIM.sh's settings: lr 0.1, momentum 0.9,
    beta 0.999, T 50, M 10, damping 0.01, bounds (0.01, 1.0), kappa (``--grad-clip``) 1, rho_min 1e-4."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    beta: float = 0.999
    update_period: int = 50
    history_size: int = 10
    damping: float = 0.01
    curvature_bounds: tuple[float, float] = (0.01, 1.0)
    kl_clip: float = 1.0
    rho_min: float = 1e-4

    def __post_init__(self) -> None:
        if isinstance(self.curvature_bounds, list):
            object.__setattr__(self, "curvature_bounds", tuple(self.curvature_bounds))


class AuthorsTraining(TrainingOptimizer):
    def curvature_records(self) -> list[dict[str, Any]]:
        return list(self.optimizer.last_pairs)  # type: ignore[attr-defined]


def build_mlbfgs_authors(model: nn.Module, cfg: MLBFGSAuthorsConfig) -> TrainingOptimizer:
    params = trainable_parameters(model)
    blocks, _ = authors_blocks(model)
    kwargs = {f.name: getattr(cfg, f.name) for f in fields(cfg)
              if f.name in ("lr", "momentum", "weight_decay", "beta", "pair_momentum", "update_period",
                            "history_size", "damping")}
    opt = AuthorsMLBFGS(params, blocks, variant="block", bounds=cfg.curvature_bounds, behaviour=cfg.behaviour(),
                        **kwargs)
    return AuthorsTraining("mlbfgs_authors", opt, 1.0, model)


def build_slimqn_authors(model: nn.Module, cfg: SlimQNAuthorsConfig) -> TrainingOptimizer:
    kwargs = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "curvature_bounds"}
    opt = AuthorsMLBFGS(trainable_parameters(model), variant="model", bounds=cfg.curvature_bounds, **kwargs)
    return AuthorsTraining("slimqn_authors", opt, 1.0, model)
