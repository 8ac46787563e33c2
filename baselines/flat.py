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
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .contract import (
    FROZEN_HINT,
    PicklableOptimizer,
    check_dense_gradients,
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
        self.n = sum(self.numels)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        sizes = [len(g["params"]) for g in param_groups]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        self.group_slices = [slice(a, a + k) for a, k in zip(starts, sizes)]

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


class FlatQuasiNewton(PicklableOptimizer):
    """Base of the whole-model methods (see the module docstring). Subclasses set ``STATE_KEY``,
    allocate their flat buffers with :meth:`_buffer`, implement :meth:`_settings`,
    :meth:`_extra_state` and :meth:`_load_extra_state`, and call :meth:`_publish` at the end of
    ``__init__``."""

    STATE_KEY = "flat_qn"

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], history_size: int) -> None:
        super().__init__(params, defaults)
        check_parameters((p for g in self.param_groups for p in g["params"]), type(self).__name__)
        self._flat = FlatParams(self.param_groups)
        self._ring = PairRing(history_size, self._flat.n, self._flat.dtype, self._flat.device)
        self._buffer_names: list[str] = []
        self._mark_offsets()
        self.state[self._flat.params[0]]["step"] = 0

    def _mark_offsets(self) -> None:
        # Every parameter holds state (where its slice of the flat vector starts), as the strict
        # loading of torch.distributed.checkpoint.state_dict expects of a parameter that trains.
        offset = 0
        for p, n in zip(self._flat.params, self._flat.numels):
            self.state[p]["flat_offset"] = offset
            offset += n

    # ---- layout ---------------------------------------------------------------------------------
    def _buffer(self, name: str) -> torch.Tensor:
        """A flat buffer kept as ``self.<name>``, extended with zeros when a group is added."""
        self._buffer_names.append(name)
        setattr(self, name, self._flat.new())
        return getattr(self, name)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        if not hasattr(self, "_flat"):  # still in __init__
            return
        check_parameters((p for g in self.param_groups for p in g["params"]), type(self).__name__)
        old = self._flat.n
        self._flat = FlatParams(self.param_groups)
        if self._flat.n == old:
            return
        self._ring.extend(self._flat.n)
        for name in self._buffer_names:
            buf = self._flat.new()
            buf[:old].copy_(getattr(self, name))
            setattr(self, name, buf)
        self._mark_offsets()
        self._on_extended(old)

    def _on_extended(self, old: int) -> None:
        """Hook: the flat vector grew from ``old`` elements (buffers already zero-padded)."""

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
        self.state[self._flat.params[0]][self.STATE_KEY] = {
            "settings": self._settings(),
            "numel": self._flat.n,
            "ring": self._ring.state_dict(),
            "buffers": {name: getattr(self, name) for name in self._buffer_names},
            **self._extra_state(),
        }

    def state_dict(self) -> dict[str, Any]:
        self._publish()
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        name = type(self).__name__
        first = first_saved_index(state_dict)
        entry = dict(state_dict["state"].get(first, {}))
        extra = entry.pop(self.STATE_KEY, None)
        if extra is None:
            raise ValueError(f"{name}.load_state_dict: no {self.STATE_KEY!r} entry under the first parameter"
                             + FROZEN_HINT)
        check_saved_settings(name, extra.get("settings"), self._settings())
        if extra["numel"] != self._flat.n:
            raise ValueError(
                f"{name}.load_state_dict: the state is for {extra['numel']} parameters' elements, this optimizer "
                f"has {self._flat.n}; use the same model and groups"
            )
        super().load_state_dict({**state_dict, "state": {**state_dict["state"], first: entry}})
        self._ring.load_state_dict(extra["ring"])
        for key, value in extra["buffers"].items():
            getattr(self, key).copy_(value)
        self._load_extra_state(extra)
        self._publish()
