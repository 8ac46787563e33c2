"""A flat view of a list of parameters, with preallocated buffers (no ``torch.cat`` per step).

Quasi-Newton baselines work on vectors of the whole model. :class:`FlatParams` keeps the layout
(one slice per parameter) and copies parameters / gradients into preallocated flat buffers with one
``_foreach_copy_``, and adds a flat direction back onto the parameters the same way.
"""

from __future__ import annotations

import torch


class FlatParams:
    def __init__(self, params: list[torch.Tensor]) -> None:
        if not params:
            raise ValueError("no parameters")
        self.params = params
        self.numels = [p.numel() for p in params]
        self.n = sum(self.numels)
        self.dtype = params[0].dtype
        self.device = params[0].device

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
