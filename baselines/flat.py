"""Whole-model quasi-Newton methods on one flat vector: the layout and the shared optimizer base.

:class:`FlatParams` keeps the layout (one slice per parameter, all groups in order) and copies
parameters / gradients into preallocated flat buffers with one ``_foreach_copy_``.

:class:`FlatQuasiNewton` is the base of oLBFGS and SQN. It owns what torch.optim's contract asks
of them, so the methods only do their mathematics:

- parameters without a gradient count as zero gradient and are not moved (their entries of the
  direction are zeroed before the step, so the pair ``s`` is the step actually taken); a step where
  no parameter has a gradient does nothing and does not count;
- groups: each group's ``lr`` (float or 1-element tensor) and ``weight_decay`` apply to its own
  parameters. A group added later extends the flat vector; the stored pairs get zeros in the new
  coordinates, which keeps them valid pairs (their H acts as the initial matrix on the new
  coordinates and couples nothing), so curvature memory is kept;
- state: every parameter's entry records where its slice of the flat vector starts
  (``"flat_offset"``), the step counter lives in ``state[first parameter]["step"]`` from
  construction, and the rest (ring, buffers, settings) is saved under ``state[first parameter][STATE_KEY]``, so the
  state is keyed by parameters only (torch.distributed.checkpoint helpers accept it); loading
  checks the settings that shape the state and casts to the parameters' dtype and device.

``state`` and ``param_groups`` are the source of truth between steps, as frameworks edit them
behind the optimizer's back. The layout, buffers and ring are a cache of them, checked at the start
of every step (and by ``state_dict`` / ``load_state_dict``), allocating no tensor unless one changed:

- ``param_groups``: a cast or move of the parameters (``model.double()``, ``.to(device)``) re-lays
  the buffers and pairs in the new dtype / device, as loading would cast them; parameters appended to
  a group by hand extend the flat vector as :meth:`add_param_group` does; a parameter removed or
  replaced (its coordinates are in every stored pair) is refused with a ``ValueError`` naming it;
- ``state``: cleared or replaced by an empty one, the optimizer starts over as a new one built then
  (torch.optim's optimizers restart lazily the same way); replaced by copies (moved to another device
  and back, ``load_state_dict``), the copies' values are taken over. The published entry's counters
  are kept current after every step, so a copy taken between steps resumes exactly.
- ``load_state_dict``: a pre-hook (checks, takes the entry out) and a post-hook (copies it into the
  live tensors) registered at construction, ahead of any hook a user registers, so the user's
  post-hooks see the loaded state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any, cast

import torch

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
from .lbfgs_math import PairRing


class FlatParams:
    """The parameters of ``param_groups`` (in order) as one flat vector."""

    def __init__(self, param_groups: list[dict[str, Any]]) -> None:
        self.params = [p for g in param_groups for p in g["params"]]
        if not self.params:
            raise ValueError("no parameters")
        self.numels = [p.numel() for p in self.params]
        self.offsets = [0, *itertools.accumulate(self.numels)][:-1]  # linear in the tensors
        self.n = sum(self.numels)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        sizes = [len(g["params"]) for g in param_groups]
        starts = [0, *itertools.accumulate(sizes)][:-1]
        self.group_slices = [slice(a, a + k) for a, k in zip(starts, sizes)]
        # what this layout was built for: compared with the groups at every step (FlatQuasiNewton._sync)
        self.layout = ParamLayout(param_groups)

    def new(self) -> torch.Tensor:
        return torch.zeros(self.n, dtype=self.dtype, device=self.device)

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat`` shaped like the parameters."""
        return [v.view_as(p) for v, p in zip(flat.split(self.numels), self.params, strict=True)]

    @torch.no_grad()
    def gather_params(self, out: torch.Tensor) -> torch.Tensor:
        torch._foreach_copy_(self.views(out), self.params)
        return out

    @torch.no_grad()
    def gather_grads(self, out: torch.Tensor) -> torch.Tensor:
        """Copy the gradients into ``out`` (a missing gradient counts as zero)."""
        views = self.views(out)
        for v, p in zip(views, self.params, strict=True):
            if p.grad is None:
                v.zero_()
        pairs = [(v, p.grad) for v, p in zip(views, self.params, strict=True) if p.grad is not None]
        if pairs:
            torch._foreach_copy_([v for v, _ in pairs], [g for _, g in pairs])
        return out

    @torch.no_grad()
    def set_params(self, flat: torch.Tensor) -> None:
        torch._foreach_copy_(self.params, self.views(flat))

    @torch.no_grad()
    def add_to_params(self, flat: torch.Tensor, alpha: float = 1.0) -> None:
        torch._foreach_add_(self.params, self.views(flat), alpha=alpha)


_CHANGES_ALLOWED = ("its curvature pairs span the parameters it has, so parameters may be added (add_param_group, "
                    "or appended to a group) or cast and moved, not removed or replaced: build a new optimizer "
                    "for new tensors")


def _relaid(old: torch.Tensor, flat: FlatParams, moves: Sequence[tuple[slice, slice]]) -> torch.Tensor:
    """``old`` on the layout ``flat``: each ``(new, old)`` run of ``moves`` copied (and cast), zeros elsewhere."""
    out = flat.new()
    for dst, src in moves:
        out[dst].copy_(old[src])
    return out


def _check_before_load(optimizer: torch.optim.Optimizer, state_dict: dict[str, Any]) -> dict[str, Any]:
    """load_state_dict pre-hook of :class:`FlatQuasiNewton` (module level: pickles by name)."""
    return cast(FlatQuasiNewton, optimizer)._check_loadable(state_dict)


def _take_loaded_state(optimizer: torch.optim.Optimizer) -> None:
    """load_state_dict post-hook of :class:`FlatQuasiNewton`."""
    cast(FlatQuasiNewton, optimizer)._take_loaded_state()


class FlatQuasiNewton(PicklableOptimizer):
    """Base of the whole-model methods (see the module docstring). Subclasses set ``STATE_KEY``,
    allocate their flat buffers with :meth:`_buffer`, implement :meth:`_settings`,
    :meth:`_extra_state`, :meth:`_load_extra_state` and :meth:`_restart_extra`, call :meth:`_publish` at
    the end of ``__init__``, and call :meth:`_sync` first and :meth:`_publish_counters` last in ``step``."""

    STATE_KEY = "flat_qn"

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], history_size: int) -> None:
        super().__init__(params, defaults)
        check_parameters((p for g in self.param_groups for p in g["params"]), type(self).__name__)
        self._flat = FlatParams(self.param_groups)
        self._ring = PairRing(history_size, self._flat.n, self._flat.dtype, self._flat.device)
        self._buffer_names: list[str] = []
        self._published: dict[str, Any] | None = None  # the entry last put in the state (live tensors)
        self._loading: dict[str, Any] | None = None  # the entry a load places, between its two hooks
        self._mark_offsets()
        self.state[self._flat.params[0]]["step"] = 0
        # registered now, so they run before any hook a user registers: a user's post-hook sees the
        # loaded state in place (torch runs post-hooks right after it replaces the state)
        self.register_load_state_dict_pre_hook(_check_before_load)
        self.register_load_state_dict_post_hook(_take_loaded_state)

    def _mark_offsets(self) -> None:
        # Every parameter holds state (where its slice of the flat vector starts), as the strict
        # loading of torch.distributed.checkpoint.state_dict expects of a parameter that trains.
        for p, offset in zip(self._flat.params, self._flat.offsets):
            self.state.setdefault(p, {})["flat_offset"] = offset

    # ---- layout ---------------------------------------------------------------------------------
    def _buffer(self, name: str) -> torch.Tensor:
        """A flat buffer kept as ``self.<name>``, re-laid (zeros in new coordinates) with the layout."""
        self._buffer_names.append(name)
        setattr(self, name, self._flat.new())
        return getattr(self, name)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if hasattr(self, "_flat"):  # not while __init__ builds the groups
            self._sync()

    def _relayout(self) -> None:
        """Follow ``param_groups`` (a cast, a move, parameters added or reordered) keeping the state: its
        values move with their parameters, new coordinates are zero (the stored pairs stay valid pairs:
        their H acts as the initial matrix there and couples nothing, so curvature memory is kept), and
        tensors take the parameters' dtype and device as ``load_state_dict`` would cast them. A parameter
        removed or replaced cannot be followed (its coordinates are in every pair): ``ValueError``."""
        name = type(self).__name__
        old = self._flat
        groups = [list(g["params"]) for g in self.param_groups]
        added = check_layout_change(name, old.layout, groups, _CHANGES_ALLOWED)
        check_parameters((p for ps in groups for p in ps), name)
        new = FlatParams(self.param_groups)
        where = {id(p): offset for p, offset in zip(old.params, old.offsets)}
        moves: list[tuple[slice, slice]] = []  # (new, old) runs of the coordinates kept, merged where contiguous
        for p, offset, n in zip(new.params, new.offsets, new.numels):
            if id(p) not in where:
                continue
            src = where[id(p)]
            if moves and moves[-1][0].stop == offset and moves[-1][1].stop == src:
                moves[-1] = (slice(moves[-1][0].start, offset + n), slice(moves[-1][1].start, src + n))
            else:
                moves.append((slice(offset, offset + n), slice(src, src + n)))
        unchanged = (new.n == old.n and new.dtype == old.dtype and new.device == old.device
                     and moves == [(slice(0, old.n), slice(0, old.n))])
        if not unchanged:  # (an empty group added changes only the group slices)
            self._ring.relayout(new.n, moves, new.dtype, new.device)
            for key in self._buffer_names:
                setattr(self, key, _relaid(getattr(self, key), new, moves))
        self._flat = new
        if new.params[0] is not old.params[0]:  # the optimizer's own entries live under the first parameter
            entry = self.state.get(old.params[0], {})
            for key in ("step", self.STATE_KEY):
                if key in entry:
                    self.state.setdefault(new.params[0], {})[key] = entry.pop(key)
        self._mark_offsets()
        if added:
            index = {id(p): i for i, p in enumerate(new.params)}
            self._on_extended([slice(new.offsets[index[id(p)]], new.offsets[index[id(p)]] + p.numel())
                               for _, _, p in added])
        self._publish()

    def _on_extended(self, added: list[slice]) -> None:
        """Hook: the flat vector gained the coordinates ``added`` (buffers and pairs zero there)."""

    # ---- the cache checked against state and param_groups ---------------------------------------
    @torch._dynamo.disable  # bookkeeping by identity: run eagerly under torch.compile
    def _sync(self) -> None:
        """Bring the layout, buffers and ring in line with ``state`` and ``param_groups`` (see the module
        docstring): state first (it is keyed by the layout's first parameter), then the layout. In a
        plain run it compares identities and a few attributes, and allocates nothing."""
        self._sync_state()
        if not self._flat.layout.matches(self.param_groups):
            self._relayout()

    def _sync_state(self) -> None:
        entry = self.state.get(self._flat.params[0])
        if entry is None or "step" not in entry or self.STATE_KEY not in entry:
            self._restart()
        elif entry[self.STATE_KEY] is not self._published or not self._live(entry[self.STATE_KEY]):
            self._take(entry[self.STATE_KEY])

    def _live(self, published: dict[str, Any]) -> bool:
        """Whether ``published`` still holds this optimizer's own tensors (then there is nothing to take)."""
        ring, buffers, r = published.get("ring"), published.get("buffers"), self._ring
        return (isinstance(ring, dict) and ring.get("s") is r.s and ring.get("y") is r.y and ring.get("sy") is r.sy
                and ring.get("yy") is r.yy and isinstance(buffers, dict)
                and all(buffers.get(key) is getattr(self, key) for key in self._buffer_names))

    def _take(self, published: dict[str, Any]) -> None:
        """Take the values of a state entry that replaced the published one (a copy moved and back, a
        loaded one) into the live tensors (cast to the parameters' dtype and device), then publish."""
        numel = published.get("numel")
        if numel is None or int(numel) != self._flat.n:
            raise ValueError(
                f"{type(self).__name__}: the state under the first parameter is for {numel} parameters' elements, "
                f"this optimizer has {self._flat.n}; use the same model and groups"
            )
        self._ring.load_state_dict(published["ring"])
        for key, value in published["buffers"].items():
            getattr(self, key).copy_(value)
        self._load_extra_state(published)
        self._publish()

    def _restart(self) -> None:
        """The state was cleared or replaced by an empty one: start over, in place, as an optimizer built
        now would (torch.optim's own optimizers restart lazily the same way)."""
        self._ring.reset()
        for key in self._buffer_names:
            getattr(self, key).zero_()
        self._restart_extra()
        self._mark_offsets()
        self.state.setdefault(self._flat.params[0], {})["step"] = 0
        self._publish()

    def _restart_extra(self) -> None:
        """Hook: reset the subclass's own counters to those of a new optimizer."""

    # ---- per step -------------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        return self.state[self._flat.params[0]]["step"]

    def _count_step(self) -> None:
        self.state[self._flat.params[0]]["step"] += 1

    def _has_gradients(self) -> bool:
        check_dense_gradients(self._flat.params, type(self).__name__)
        return any(p.grad is not None for p in self._flat.params)

    def _gradient(self, out: torch.Tensor, params_buffer: torch.Tensor) -> torch.Tensor:
        """``out <- grad + weight_decay * theta`` per group (zero where a parameter has no gradient)."""
        self._flat.gather_grads(out)
        views = self._flat.views(out)
        for group, sl in zip(self.param_groups, self._flat.group_slices):
            wd = group["weight_decay"]
            if wd != 0.0:
                ps = [p for p in self._flat.params[sl] if p.grad is not None]
                vs = [v for v, p in zip(views[sl], self._flat.params[sl]) if p.grad is not None]
                if ps:
                    torch._foreach_add_(vs, ps, alpha=wd)
        return out

    def _mask_(self, direction: torch.Tensor) -> torch.Tensor:
        """Zero ``direction`` where a parameter has no gradient (it must not move)."""
        frozen = [v for v, p in zip(self._flat.views(direction), self._flat.params) if p.grad is None]
        if frozen:
            torch._foreach_zero_(frozen)
        return direction

    def _scale_by_lr_(self, direction: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
        """``direction <- lr_group * factor * direction`` group by group (in place)."""
        views = self._flat.views(direction)
        for group, sl in zip(self.param_groups, self._flat.group_slices):
            if views[sl]:
                torch._foreach_mul_(views[sl], lr_value(group["lr"]) * factor)
        return direction

    # ---- state ------------------------------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        return {"history_size": self._ring.m}

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        del extra

    def _publish(self) -> None:
        """Put the ring, buffers, settings and extras into ``state[first parameter][STATE_KEY]`` (the
        live tensors, current counters): ``state_dict`` and the checkpoint helpers, flattened ones
        included, see the optimizer's whole state from construction on."""
        self._published = {
            "settings": self._settings(),
            "numel": self._flat.n,
            "ring": self._ring.state_dict(),
            "buffers": {name: getattr(self, name) for name in self._buffer_names},
            **self._extra_state(),
        }
        self.state.setdefault(self._flat.params[0], {})[self.STATE_KEY] = self._published

    def _publish_counters(self) -> None:
        """After a step: the published entry's counters made current (its tensors are the live ones), so
        a copy of the state taken between steps (offloading, device moves) resumes exactly."""
        if self._published is not None:
            self._published["ring"]["count"] = self._ring.count
            self._published["ring"]["next"] = self._ring.next
            self._published.update(self._extra_state())

    def state_dict(self) -> dict[str, Any]:
        self._sync()
        self._publish()
        return super().state_dict()

    def _check_loadable(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        """load_state_dict pre-hook: the layout follows ``param_groups`` (a cast or parameters added since
        the last step), ``state_dict`` must fit it (settings, size), and the optimizer's own entry is
        taken out: :meth:`_take_loaded_state` copies it straight into the live tensors (torch would first
        make a cast copy of the whole history on the parameters' device)."""
        self._sync()
        name = type(self).__name__
        first = first_saved_index(state_dict)
        entry = dict(state_dict["state"].get(first, {}))
        extra = entry.pop(self.STATE_KEY, None)
        if extra is None or "step" not in entry:
            missing = "step" if extra is not None else self.STATE_KEY
            raise ValueError(f"{name}.load_state_dict: no {missing!r} entry under the first parameter" + FROZEN_HINT)
        check_saved_settings(name, extra.get("settings"), self._settings())
        if extra["numel"] != self._flat.n:
            raise ValueError(
                f"{name}.load_state_dict: the state is for {extra['numel']} parameters' elements, this optimizer "
                f"has {self._flat.n}; use the same model and groups"
            )
        self._loading = extra
        return {**state_dict, "state": {**state_dict["state"], first: entry}}

    def _take_loaded_state(self) -> None:
        """load_state_dict post-hook (it runs before a user's): the entry taken out by the pre-hook is
        copied into the live tensors (cast to the parameters' dtype and device), which are published."""
        extra, self._loading = self._loading, None
        if extra is None:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the pre-hook that takes its own entry out of "
                             "the state did not run (was its handle removed?)")
        self._take(extra)
        self._mark_offsets()
